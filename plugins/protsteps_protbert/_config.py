"""The settings of the ``protbert`` teacher."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from protsteps import option

__all__ = ["DEFAULT_MODEL", "ProtBertConfig"]

#: the Hugging Face repo the STEPS authors loaded (``BertModel.from_pretrained``)
DEFAULT_MODEL = "Rostlab/prot_bert"


@dataclasses.dataclass
class ProtBertConfig:
    """Settings of the ProtBert teacher (section ``[teacher]`` with ``name = "protbert"``)."""

    model: str = option(
        DEFAULT_MODEL,
        "Hugging Face repo id of a BERT protein model (Rostlab/prot_bert, Rostlab/prot_bert_bfd) "
        "to look for in the Hugging Face cache or download. Not used with `weights`.",
    )
    weights: Path | None = option(
        None,
        "A local folder as `hf download` or save_pretrained writes it (config.json, "
        "the model weights, vocab.txt or tokenizer files); used instead of the Hugging Face cache "
        "and the download.",
    )
    download: bool = option(
        True,
        "Download the model from the Hugging Face Hub into its cache when it is not there (after "
        "a connectivity probe of at most 3 s). False never touches the network.",
    )
    layer: int = option(
        -1,
        "Which layer's representation to return: 0 is the embedding layer's output, i the "
        "output of transformer layer i; negative counts from the end (-1 is the last layer).",
    )
    trainable_layers: int = option(
        1,
        "k: the k transformer layers just below the chosen representation form the trainable "
        "tail (the STEPS authors trained the last of ProtBert's 30 layers: k = 1); 0 freezes "
        "everything.",
        minimum=0,
    )
    window: int | None = option(
        None,
        "Longest stretch of residues embedded at once; unset is the model's limit "
        "(max_position_embeddings - 2: 39,998 for ProtBert, so chains are embedded whole, as "
        "the STEPS authors did). Longer chains go through overlapping windows, averaged where "
        "they overlap.",
        minimum=1,
    )
    stride: int | None = option(
        None,
        "Residues between the starts of consecutive windows (1..window); unset is half the window.",
        minimum=1,
    )
    max_tokens: int = option(
        8192,
        "Most tokens (batch size x padded length, [CLS]/[SEP] included) in one forward pass on an "
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
