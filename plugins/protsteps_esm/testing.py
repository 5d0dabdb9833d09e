"""Small random ESM-2 checkpoints in fair-esm's exact on-disk format.

Released ESM-2 files are fairseq checkpoints stripped down to two entries:

``model``
    the state dict, every name prefixed as fairseq stored it: ``encoder.lm_head.*`` for the
    language-model head and ``encoder.sentence_encoder.*`` for everything else (token
    embedding, transformer layers, final layer norm). fair-esm's
    ``_load_model_and_alphabet_core_v2`` strips these prefixes. The contact-prediction
    weights (``contact_head.regression.*``) are not in it: they ship in a separate
    ``-contact-regression.pt`` file.
``cfg``
    a dict whose ``cfg["model"]`` is an ``argparse.Namespace`` of fairseq's model arguments
    (``encoder_layers``, ``encoder_embed_dim``, ``encoder_attention_heads``,
    ``token_dropout``, ...), the reason torch >= 2.6 refuses these files by default.

:func:`write_esm2_checkpoint` builds fair-esm's own ``ESM2`` module with random weights and
saves it in that layout, so that tests and benchmarks load it through exactly the code path
real weights take. With ``num_layers=6, embed_dim=320, attention_heads=20`` it has the
architecture of ``esm2_t6_8M_UR50D``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import esm
import torch
from esm.model.esm2 import ESM2

from protsteps.files import atomic_torch_save

__all__ = ["esm2_checkpoint", "structure_sequences", "write_esm2_checkpoint"]


def _stored_name(name: str) -> str:
    if name.startswith("lm_head."):
        return f"encoder.{name}"
    return f"encoder.sentence_encoder.{name}"


def esm2_checkpoint(
    *,
    num_layers: int = 2,
    embed_dim: int = 32,
    attention_heads: int = 4,
    token_dropout: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """The checkpoint dict of a random ESM-2 model (see the module docstring).

    Parameters
    ----------
    num_layers, embed_dim, attention_heads:
        Architecture; ``embed_dim`` must be divisible by ``attention_heads`` and the head
        width even (rotary embeddings).
    token_dropout:
        ESM-2's embedding rescaling (True in every released model).
    seed:
        Seeds the initialisation; the caller's random state is left untouched.
    dtype:
        Storage dtype of the tensors.
    """
    if embed_dim % attention_heads or (embed_dim // attention_heads) % 2:
        raise ValueError(f"embed_dim {embed_dim} must split into {attention_heads} heads of even width")
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ESM2(
            num_layers=num_layers,
            embed_dim=embed_dim,
            attention_heads=attention_heads,
            alphabet=alphabet,
            token_dropout=token_dropout,
        )
    state = {
        _stored_name(name): tensor.detach().to(dtype).clone()
        for name, tensor in model.state_dict().items()
        if not name.startswith("contact_head.")
    }
    cfg_model = argparse.Namespace(
        arch="esm2",
        encoder_layers=num_layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=4 * embed_dim,
        encoder_attention_heads=attention_heads,
        token_dropout=token_dropout,
        max_positions=1024,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        mask_prob=0.15,
        no_seed_provided=False,
    )
    return {"model": state, "cfg": {"model": cfg_model}}


def write_esm2_checkpoint(
    path: str | os.PathLike[str],
    *,
    num_layers: int = 2,
    embed_dim: int = 32,
    attention_heads: int = 4,
    token_dropout: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write :func:`esm2_checkpoint` to ``path`` (atomically) and return the path.

    >>> from protsteps_esm.testing import write_esm2_checkpoint
    >>> path = write_esm2_checkpoint(tmp / "esm2_t6.pt", num_layers=6, embed_dim=320,
    ...                              attention_heads=20)  # doctest: +SKIP
    """
    path = Path(path)
    data = esm2_checkpoint(
        num_layers=num_layers,
        embed_dim=embed_dim,
        attention_heads=attention_heads,
        token_dropout=token_dropout,
        seed=seed,
        dtype=dtype,
    )
    atomic_torch_save(data, path)
    return path


def structure_sequences(path: str | os.PathLike[str]) -> dict[str, str]:
    """One-letter sequences of a structure file's chains (first model, residues with a CA
    atom, in file order; unknown residues as X), read with Biopython.

    A convenience for tests and benchmarks that need real sequences; training reads
    structures through the featurizer instead.
    """
    import gzip
    import warnings

    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.SeqUtils import seq1

    path = Path(path)
    name = path.name.lower()
    parser: Any = MMCIFParser(QUIET=True) if ".cif" in name else PDBParser(QUIET=True)
    opener: Any = gzip.open if name.endswith(".gz") else open
    with warnings.catch_warnings(), opener(path, "rt") as handle:
        warnings.simplefilter("ignore")
        structure = parser.get_structure(path.stem, handle)
    model = next(iter(structure))
    sequences = {}
    for chain in model:
        residues = [r for r in chain if "CA" in r and r.id[0] != "W"]
        if residues:
            sequences[chain.id] = "".join(seq1(r.get_resname(), undef_code="X") for r in residues)
    return sequences
