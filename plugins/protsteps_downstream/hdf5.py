"""The ``hdf5`` embeddings writer: ``protsteps embed --out x.h5`` (or ``.hdf5``), laid out as
ProtTrans' and bio_embeddings' scripts write and read embeddings, plus a group with the rest.

Layout of the file (P chains, d the embedding width, R residues in all)::

    /<name of chain 0>        [L_0, d] float32 with --per-residue, else [d] float32 (pooled)
    /<name of chain 1>        ...
    /protsteps/               everything else, under a name no chain's can take
        embeddings            [P, d] float32   pooled: one row per chain, in input order
        key                   [P] str          each chain's key, ``SOURCE:CHAIN``
        source, chain         [P] str          the structure file and the chain id
        sequence              [P] str          one-letter sequence of the embedded residues
        residues              [P] int64        residues per chain
        residue_number        [R] int64        with --per-residue: author residue numbers,
        offsets               [P + 1] int64      chain i is offsets[i]:offsets[i+1]
        failed_source         [F] str          inputs that could not be embedded ...
        failed_error          [F] str          ... and why
        attributes: meta (JSON: protsteps version, encoder, teacher, width), per_residue,
        format (1)

A chain's **key** is ``SOURCE:CHAIN``, the source as the input named it and the chain id:
the same pair the ``.npz`` output holds in ``source`` and ``chain``, and the ``path:CHAIN``
syntax that selects a chain on input. HDF5 takes ``/`` in a name as a path separator, so
a chain's dataset name is its key with ``%`` written ``%25`` and then ``/`` written ``%2F``;
``urllib.parse.unquote(name)`` gives the key back, and each chain dataset also carries it
unescaped in its ``original_id`` attribute (bio_embeddings' name for it), with ``source``
and ``chain``. Every key contains ``:``, so ``protsteps`` (no ``:``) is never a chain's name.

A ProtTrans-style reader takes the chains by name, ``file[name][()]``; one that walks every
item at the root skips the ``protsteps`` group (``isinstance(item, h5py.Dataset)``).

h5py is an optional extra: ``pip install 'protsteps[hdf5]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np

from protsteps.errors import ProtstepsError

if TYPE_CHECKING:
    from protsteps.downstream import Embeddings

__all__ = [
    "GROUP",
    "SUFFIXES",
    "chain_key",
    "dataset_name",
    "is_hdf5",
    "key_of",
    "read_hdf5",
    "require_h5py",
    "write_hdf5",
]

HDF5_HINT = "pip install 'protsteps[hdf5]' (or pip install h5py)"
#: the group that holds everything but the chains' own datasets
GROUP = "protsteps"
#: the file-name endings the writer takes
SUFFIXES = (".h5", ".hdf5")
FORMAT = 1


def require_h5py() -> Any:
    """``h5py``, or a one-line error saying how to install it."""
    try:
        import h5py
    except ImportError:
        raise ProtstepsError(f"writing or reading .h5/.hdf5 files needs h5py: {HDF5_HINT}") from None
    return h5py


def is_hdf5(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def chain_key(source: str, chain: str) -> str:
    """``SOURCE:CHAIN``, the key of a chain (its ``original_id``)."""
    return f"{source}:{chain}"


def dataset_name(key: str) -> str:
    """The HDF5 name of a chain's dataset: ``%`` as ``%25``, then ``/`` as ``%2F``;
    ``urllib.parse.unquote`` undoes it.

    >>> dataset_name("data/1abc.pdb:A")
    'data%2F1abc.pdb:A'
    >>> key_of(dataset_name("odd%2F/name.cif:B"))
    'odd%2F/name.cif:B'
    """
    return key.replace("%", "%25").replace("/", "%2F")


def key_of(name: str) -> str:
    """The chain key a dataset name stands for: :func:`dataset_name` undone (``unquote``)."""
    return unquote(name)


def write_hdf5(embeddings: Embeddings, path: Path) -> None:
    """The ``hdf5`` writer: the layout of the module docstring, atomically (written into a
    temporary file beside ``path``, dataset by dataset, and renamed over it). Two chains with
    the same key (an input given twice) are refused: their datasets would need the same name."""
    h5py = require_h5py()
    keys = [chain_key(s, c) for s, c in zip(embeddings.source, embeddings.chain, strict=True)]
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ProtstepsError(
                f"--out {path}: chain {key} is embedded twice, and an HDF5 file names each chain's "
                "dataset by its key; give each input once, or write .npz"
            )
        seen.add(key)
    per_residue = embeddings.residue_embeddings is not None and embeddings.offsets is not None
    pooled = np.asarray(embeddings.embeddings, dtype=np.float32)
    text = h5py.string_dtype()

    def write(temporary: Path) -> None:
        with h5py.File(temporary, "w") as h5:
            _write_layout(h5, embeddings, keys, per_residue, pooled, text)

    from protsteps.files import atomic_write_path

    atomic_write_path(path, write)


def _write_layout(
    h5: Any, embeddings: Embeddings, keys: list[str], per_residue: bool, pooled: np.ndarray, text: Any
) -> None:
    """Every dataset and attribute of the layout into the open file ``h5``."""
    for i, key in enumerate(keys):
        values = embeddings.residue_embeddings_of(i) if per_residue else pooled[i]
        dataset = h5.create_dataset(dataset_name(key), data=np.asarray(values, dtype=np.float32))
        dataset.attrs["original_id"] = key
        dataset.attrs["source"] = embeddings.source[i]
        dataset.attrs["chain"] = embeddings.chain[i]
    group = h5.create_group(GROUP)
    group.create_dataset("embeddings", data=pooled)
    for name, strings in (
        ("key", keys),
        ("source", embeddings.source),
        ("chain", embeddings.chain),
        ("sequence", embeddings.sequence),
        ("failed_source", [f["source"] for f in embeddings.failed]),
        ("failed_error", [f["error"] for f in embeddings.failed]),
    ):
        group.create_dataset(name, data=np.asarray(strings, dtype=object), dtype=text, shape=(len(strings),))
    group.create_dataset("residues", data=np.asarray(embeddings.residues, dtype=np.int64))
    if per_residue:
        group.create_dataset("residue_number", data=np.asarray(embeddings.residue_number, dtype=np.int64))
        group.create_dataset("offsets", data=np.asarray(embeddings.offsets, dtype=np.int64))
    group.attrs["meta"] = json.dumps(embeddings.meta)
    group.attrs["per_residue"] = per_residue
    group.attrs["format"] = FORMAT


def _strings(dataset: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in dataset[()]]


def read_hdf5(path: str | os.PathLike[str]) -> Embeddings:
    """Read a file :func:`write_hdf5` wrote back into :class:`protsteps.downstream.Embeddings`."""
    from protsteps.downstream import Embeddings

    h5py = require_h5py()
    path = Path(path)
    if not path.exists():
        raise ProtstepsError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            if GROUP not in h5 or not isinstance(h5[GROUP], h5py.Group):
                raise ProtstepsError(
                    f"{path} has no '{GROUP}' group: not an embeddings file of protsteps embed "
                    "(a ProtTrans-style file is read with h5py directly)"
                )
            group = h5[GROUP]
            keys = _strings(group["key"])
            per_residue = bool(group.attrs["per_residue"])
            residue_embeddings = residue_number = offsets = None
            if per_residue:
                width = int(group["embeddings"].shape[1])
                chains = [np.asarray(h5[dataset_name(key)][()], dtype=np.float32) for key in keys]
                residue_embeddings = np.concatenate([np.zeros((0, width), np.float32), *chains])
                residue_number = np.asarray(group["residue_number"][()], dtype=np.int64)
                offsets = np.asarray(group["offsets"][()], dtype=np.int64)
            return Embeddings(
                embeddings=np.asarray(group["embeddings"][()], dtype=np.float32),
                source=_strings(group["source"]),
                chain=_strings(group["chain"]),
                residues=np.asarray(group["residues"][()], dtype=np.int64),
                sequence=_strings(group["sequence"]),
                residue_embeddings=residue_embeddings,
                residue_number=residue_number,
                offsets=offsets,
                failed=[
                    {"source": s, "error": e}
                    for s, e in zip(
                        _strings(group["failed_source"]), _strings(group["failed_error"]), strict=True
                    )
                ],
                meta=json.loads(str(group.attrs["meta"])),
            )
    except (OSError, KeyError) as exc:
        raise ProtstepsError(f"{path} cannot be read as an embeddings HDF5 file: {exc}") from None
