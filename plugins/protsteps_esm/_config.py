"""The settings of the ``esm`` teacher and the ESM-2 models fair-esm knows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, NamedTuple

from protsteps import option

__all__ = ["ESM2_MODELS", "ESM2Architecture", "ESM2Name", "ESMConfig", "MAX_WINDOW"]

ESM2Name = Literal[
    "esm2_t6_8M_UR50D",
    "esm2_t12_35M_UR50D",
    "esm2_t30_150M_UR50D",
    "esm2_t33_650M_UR50D",
    "esm2_t36_3B_UR50D",
    "esm2_t48_15B_UR50D",
]


class ESM2Architecture(NamedTuple):
    """Shape of one released ESM-2 model."""

    num_layers: int
    embed_dim: int
    attention_heads: int


#: every ESM-2 model fair-esm 2.0.0 can fetch, by the name fair-esm and the torch hub use
ESM2_MODELS: dict[str, ESM2Architecture] = {
    "esm2_t6_8M_UR50D": ESM2Architecture(6, 320, 20),
    "esm2_t12_35M_UR50D": ESM2Architecture(12, 480, 20),
    "esm2_t30_150M_UR50D": ESM2Architecture(30, 640, 20),
    "esm2_t33_650M_UR50D": ESM2Architecture(33, 1280, 20),
    "esm2_t36_3B_UR50D": ESM2Architecture(36, 2560, 40),
    "esm2_t48_15B_UR50D": ESM2Architecture(48, 5120, 40),
}

#: ESM-2 was trained on crops of 1,024 tokens: 1,022 residues plus BOS and EOS
MAX_WINDOW = 1022


@dataclasses.dataclass
class ESMConfig:
    """Settings of the ESM-2 teacher (section ``[teacher]`` with ``name = "esm"``)."""

    model: ESM2Name = option(
        "esm2_t6_8M_UR50D",
        "Which ESM-2 model to look for in the torch hub cache or download. Not used with "
        "`weights`: a local file's own configuration decides the architecture.",
    )
    weights: Path | None = option(
        None,
        "A local ESM-2 checkpoint file (fair-esm's .pt format); used instead of the torch hub "
        "cache and the download.",
    )
    download: bool = option(
        True,
        "Download the weights with fair-esm's URL into the torch hub cache when they are not "
        "there. False never touches the network.",
    )
    layer: int = option(
        -1,
        "Which layer's representation to return: 0 is the token embedding, i the output of "
        "transformer layer i; negative counts from the end (-1 is the last layer, after "
        "ESM-2's final layer norm).",
    )
    trainable_layers: int = option(
        1,
        "k: the k transformer layers just below the chosen representation form the trainable "
        "tail (plus the final layer norm when the last layer is chosen); 0 freezes everything.",
        minimum=0,
    )
    window: int = option(
        MAX_WINDOW,
        "Longest stretch of residues embedded at once (at most 1022); longer chains go "
        "through overlapping windows, averaged where they overlap.",
        minimum=1,
        maximum=MAX_WINDOW,
    )
    stride: int = option(
        511,
        "Residues between the starts of consecutive windows (1..window); smaller means more overlap.",
        minimum=1,
        maximum=MAX_WINDOW,
    )
    max_tokens: int = option(
        8192,
        "Most tokens (batch size x padded length, BOS/EOS included) in one forward pass on an "
        "accelerator; on CPU each sequence runs alone (faster there, and bit-reproducible).",
        minimum=1,
    )
    cache: bool = option(
        True,
        "Cache the frozen trunk's output (the hidden states entering the trainable tail) per "
        "sequence, so that a training step recomputes only the tail.",
    )
    cache_mb: int = option(
        1024,
        "Memory budget of the in-memory trunk cache in MiB (least recently used entries are "
        "dropped first; held in CPU memory).",
        minimum=0,
    )
    cache_dir: Path | None = option(
        None,
        "Folder for a persistent trunk cache shared between runs (one file per sequence, "
        "written atomically). None keeps the cache in memory only.",
    )
