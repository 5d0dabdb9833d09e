"""Embeddings of a pretrained encoder for other tools: ``.npz`` or Parquet files (the two
writers of the built-in plugin ``downstream``; a plugin adds others through the hook
``protsteps_register_embeddings_writers``).

``.npz`` arrays (``numpy.load(path)`` reads them without pickle):

=====================  ==============  ==============================================
``embeddings``         [P, d] float32  one row per protein chain
``source``             [P] str         the structure file
``chain``              [P] str         the chain identifier
``residues``           [P] int64       residues (graph nodes) per chain
``sequence``           [P] str         one-letter sequence of those residues
``residue_embeddings`` [R, d] float32  with ``per_residue``: every residue, chains
                                       concatenated; chain i is
                                       ``offsets[i]:offsets[i+1]``
``residue_number``     [R] int64       with ``per_residue``: author residue numbers
``offsets``            [P + 1] int64   with ``per_residue``
``failed_source``      [F] str         inputs that could not be embedded ...
``failed_error``       [F] str         ... and why
``meta``               0-d str         JSON: protsteps version, encoder file, width
=====================  ==============  ==============================================

Parquet (when the file name ends in ``.parquet``; needs ``pyarrow``): one row per chain
with the columns ``source``, ``chain``, ``residues``, ``sequence``, ``embedding``
(fixed-size list of d float32) and with ``per_residue`` ``residue_embedding`` (list of
fixed-size lists) and ``residue_number``; the ``meta`` JSON and the failed inputs are in
the schema metadata under ``protsteps``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..data import GraphDataset, LengthBatchSampler
from ..errors import ProtstepsError
from ..export import require_encoder
from ..extensions import writer_for
from ..featurize import FileResult, featurize_many
from ..files import atomic_write, atomic_write_path
from ..registry import Catalog, default_catalog
from ..structure import split_selection
from ..training import Distributed, pick_device
from ._model import Backbone, batches_of, forward, load_backbone, refuse_settings_for_built

__all__ = ["Embeddings", "embed", "load_embeddings", "require_pyarrow", "write_npz", "write_parquet"]

PARQUET_HINT = "pip install 'protsteps[parquet]' (or pip install pyarrow)"


def require_pyarrow() -> Any:
    """``pyarrow`` and ``pyarrow.parquet``, or a one-line error saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ProtstepsError(f"writing or reading .parquet files needs pyarrow: {PARQUET_HINT}") from None
    return pyarrow


def _is_parquet(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(".parquet")


@dataclasses.dataclass
class Embeddings:
    """Protein (and optionally residue) embeddings with their source and chain ids.

    embeddings: [P, d] float32.
    source, chain, sequence: P strings each.
    residues: [P] int64, residues per chain.
    residue_embeddings: [R, d] float32 or ``None``; chain i is ``offsets[i]:offsets[i+1]``.
    residue_number: [R] int64 or ``None``.
    offsets: [P + 1] int64 or ``None``.
    failed: ``{"source", "error"}`` per input that could not be embedded.
    meta: protsteps version, encoder file, embedding width.
    """

    embeddings: np.ndarray
    source: list[str]
    chain: list[str]
    residues: np.ndarray
    sequence: list[str]
    residue_embeddings: np.ndarray | None = None
    residue_number: np.ndarray | None = None
    offsets: np.ndarray | None = None
    failed: list[dict[str, str]] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def residue_embeddings_of(self, index: int) -> np.ndarray:
        """``[L_i, d]``: the residue embeddings of chain ``index``."""
        if self.residue_embeddings is None or self.offsets is None:
            raise ProtstepsError("these embeddings hold no per-residue arrays (embed with per_residue=True)")
        return self.residue_embeddings[self.offsets[index] : self.offsets[index + 1]]

    def save(
        self, path: str | os.PathLike[str], format: str | None = None, catalog: Catalog | None = None
    ) -> None:
        """Write the file with the embeddings writer named ``format``, else the one whose
        suffix ends ``path`` (``.npz``, ``.parquet``, or a plugin's; see
        :func:`protsteps.extensions.writer_for`)."""
        writer = writer_for((catalog or default_catalog()).extensions, path, format)
        if writer.check is not None:
            writer.check()
        writer.write(self, Path(path))


def write_npz(embeddings: Embeddings, path: Path) -> None:
    """The ``npz`` writer: the arrays of the module docstring, atomically."""
    arrays: dict[str, np.ndarray] = {
        "embeddings": embeddings.embeddings.astype(np.float32, copy=False),
        "source": np.asarray(embeddings.source, dtype=str),
        "chain": np.asarray(embeddings.chain, dtype=str),
        "residues": embeddings.residues.astype(np.int64, copy=False),
        "sequence": np.asarray(embeddings.sequence, dtype=str),
        "failed_source": np.asarray([f["source"] for f in embeddings.failed], dtype=str),
        "failed_error": np.asarray([f["error"] for f in embeddings.failed], dtype=str),
        "meta": np.asarray(json.dumps(embeddings.meta)),
    }
    if embeddings.residue_embeddings is not None:
        arrays["residue_embeddings"] = embeddings.residue_embeddings.astype(np.float32, copy=False)
        arrays["residue_number"] = np.asarray(embeddings.residue_number, dtype=np.int64)
        arrays["offsets"] = np.asarray(embeddings.offsets, dtype=np.int64)
    # straight into the temporary file, array by array (no copy of the whole file in memory)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


#: residues (or chains, without per-residue arrays) per Parquet row group
PARQUET_GROUP_ROWS = 16384


def write_parquet(embeddings: Embeddings, path: Path) -> None:
    """The ``parquet`` writer: one row per chain (module docstring), atomically; needs pyarrow.

    Written into the temporary file a row group at a time (about :data:`PARQUET_GROUP_ROWS`
    residues each), so that the table never exists in memory whole."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    width = int(embeddings.embeddings.shape[1]) if embeddings.embeddings.ndim == 2 else 0
    pooled = np.ascontiguousarray(embeddings.embeddings, dtype=np.float32)
    # (offsets, rows, residue numbers) with per-residue arrays, else None
    per_residue = (
        (
            np.asarray(embeddings.offsets, dtype=np.int64),
            np.asarray(embeddings.residue_embeddings, dtype=np.float32),
            np.asarray(embeddings.residue_number, dtype=np.int64),
        )
        if embeddings.residue_embeddings is not None and embeddings.offsets is not None
        else None
    )

    def table(a: int, b: int) -> Any:
        """Chains ``a:b`` as a table."""
        columns = {
            "source": pa.array(embeddings.source[a:b], type=pa.string()),
            "chain": pa.array(embeddings.chain[a:b], type=pa.string()),
            "residues": pa.array(np.asarray(embeddings.residues[a:b], dtype=np.int64), type=pa.int64()),
            "sequence": pa.array(embeddings.sequence[a:b], type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(pooled[a:b].reshape(-1)), width),
        }
        if per_residue is not None:
            offsets, residues, numbers = per_residue
            low, high = int(offsets[a]), int(offsets[b])
            starts = pa.array((offsets[a : b + 1] - low).astype(np.int32), type=pa.int32())
            rows = pa.FixedSizeListArray.from_arrays(pa.array(residues[low:high].reshape(-1)), width)
            columns["residue_embedding"] = pa.ListArray.from_arrays(starts, rows)
            columns["residue_number"] = pa.ListArray.from_arrays(starts, pa.array(numbers[low:high]))
        return pa.table(columns)

    # chain boundaries of the row groups
    count = len(embeddings)
    if per_residue is not None:
        offsets = per_residue[0]
        marks = np.searchsorted(offsets, np.arange(0, int(offsets[-1]), PARQUET_GROUP_ROWS), side="right") - 1
        bounds = sorted({0, count, *(int(m) for m in marks if 0 < m < count)})
    else:
        bounds = sorted({0, count, *range(PARQUET_GROUP_ROWS, count, PARQUET_GROUP_ROWS)})
    metadata = {"protsteps": json.dumps({**embeddings.meta, "failed": embeddings.failed})}
    schema = table(0, 0).schema.with_metadata(metadata)

    def write(temporary: Path) -> None:
        with pq.ParquetWriter(temporary, schema) as writer:
            for a, b in itertools.pairwise(bounds):
                writer.write_table(table(a, b))

    atomic_write_path(path, write)


def _parquet_embeddings(path: Path) -> Embeddings:
    """:func:`load_embeddings` of a ``.parquet`` file: the arrays straight from Arrow's
    buffers (no Python object per number)."""
    require_pyarrow()
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    extra = json.loads((table.schema.metadata or {}).get(b"protsteps", b"{}"))
    failed = extra.pop("failed", [])
    width = int(extra.get("dim", 0))

    def values(name: str, levels: int) -> np.ndarray:
        column = table.column(name).combine_chunks()
        for _ in range(levels):
            column = column.flatten()
        return np.asarray(column.to_numpy(zero_copy_only=False))

    embeddings = values("embedding", 1).astype(np.float32, copy=False).reshape(table.num_rows, width)
    residue_embeddings = residue_number = offsets = None
    if "residue_embedding" in table.column_names:
        lengths = np.asarray(table.column("residue_embedding").combine_chunks().value_lengths().to_numpy())
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        residue_embeddings = values("residue_embedding", 2).astype(np.float32, copy=False).reshape(-1, width)
        residue_number = values("residue_number", 1).astype(np.int64, copy=False)
    return Embeddings(
        embeddings,
        table.column("source").to_pylist(),
        table.column("chain").to_pylist(),
        values("residues", 0).astype(np.int64, copy=False),
        table.column("sequence").to_pylist(),
        residue_embeddings,
        residue_number,
        offsets,
        failed,
        extra,
    )


def load_embeddings(path: str | os.PathLike[str]) -> Embeddings:
    """Read a file written by :meth:`Embeddings.save` (``.npz`` or ``.parquet``)."""
    path = Path(path)
    if not path.exists():
        raise ProtstepsError(f"{path} does not exist")
    if _is_parquet(path):
        return _parquet_embeddings(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ProtstepsError(f"{path} cannot be read as an embeddings .npz file: {exc}") from None
    return Embeddings(
        arrays["embeddings"],
        arrays["source"].tolist(),
        arrays["chain"].tolist(),
        arrays["residues"],
        arrays["sequence"].tolist(),
        arrays.get("residue_embeddings"),
        arrays.get("residue_number"),
        arrays.get("offsets"),
        [
            {"source": s, "error": e}
            for s, e in zip(arrays["failed_source"].tolist(), arrays["failed_error"].tolist(), strict=True)
        ],
        json.loads(str(arrays["meta"])),
    )


def embed(
    inputs: Iterable[str | os.PathLike[str]],
    pretrained: str | os.PathLike[str] | Backbone,
    *,
    per_residue: bool = False,
    batch_size: int = 16,
    max_residues: int = 0,
    device: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    catalog: Catalog | None = None,
    on_total: Callable[[int], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Embeddings:
    """Embed every protein chain of ``inputs`` with the encoder of ``pretrained``.

    Parameters
    ----------
    inputs:
        As for ``protsteps featurize``: files (``path:CHAIN`` selects chains), folders
        (searched recursively), text files listing paths.
    pretrained:
        A run folder (pretrain or finetune), an ``encoder.pt``, or a :class:`Backbone`.
    per_residue:
        Also keep every residue's embedding.
    batch_size, max_residues:
        Proteins per forward pass, or a residue budget per pass (when > 0).
    settings:
        With ``pretrained`` read from a file: the locations that file does not decide, per
        kind (``{"teacher": {"cache_dir": "/scratch/trunks"}}``; see
        :func:`protsteps.export.load_pretrained`).

    Inputs that cannot be featurized are listed in ``failed``; the rest are embedded, in
    input order. The encoder runs in eval mode; the teacher, if any, gives its features.
    """
    if isinstance(pretrained, Backbone):
        refuse_settings_for_built(settings)
        backbone = pretrained
    else:
        backbone = load_backbone(Path(pretrained), catalog, settings)
    if per_residue:  # before anything is featurized
        require_encoder(backbone.encoder, backbone.record, "per_residue", "embed --per-residue", catalog)
    torch_device = pick_device(device, Distributed(), where="--device")
    backbone.to(torch_device)
    report = featurize_many(
        inputs,
        backbone.featurizer["name"],
        backbone.featurizer.get("config", {}),
        cache_dir=cache_dir,
        workers=max(1, workers),
        on_total=on_total,
        on_result=on_result,
    )
    dataset = GraphDataset(report.ok, report.cache_dir)
    sampler = LengthBatchSampler(
        dataset.lengths,
        max_residues=max_residues,
        batch_size=batch_size if max_residues == 0 else 0,
        shuffle=False,
    )
    dim = int(backbone.encoder.out_dim)
    count = len(dataset)
    lengths = dataset.lengths
    graph = np.zeros((count, dim), dtype=np.float32)
    sequences = [""] * count
    # per-residue rows go straight into their place in one array (R x d float32, the largest
    # thing a run holds): one copy, not a list of batches' arrays and their concatenation
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    residue_rows = np.zeros((int(offsets[-1]) if per_residue else 0, dim), dtype=np.float32)
    numbers = np.zeros(len(residue_rows), dtype=np.int64)
    was_training = backbone.encoder.training
    backbone.encoder.eval()
    try:
        with torch.no_grad():
            # each graph is read from the cache once: sequences and residue numbers come
            # from the batch that is embedded
            for indices, batch in batches_of(dataset, sampler.batches()):
                output = forward(backbone, batch.to(torch_device))
                graph[indices] = output.graph.float().cpu().numpy()
                ptr = batch.ptr.tolist()
                node = output.node.float().cpu().numpy() if per_residue else None
                residue_number = batch.residue_number.cpu().numpy() if per_residue else None
                for b, index in enumerate(indices):
                    sequences[index] = batch.sequences[b]
                    if node is not None and residue_number is not None:
                        rows = slice(int(offsets[index]), int(offsets[index + 1]))
                        residue_rows[rows] = node[ptr[b] : ptr[b + 1]]
                        numbers[rows] = residue_number[ptr[b] : ptr[b + 1]]
    finally:
        backbone.encoder.train(was_training)
    out = Embeddings(
        embeddings=graph,
        source=[str(split_selection(str(e["source"]))[0]) for e in report.ok],
        chain=[str(e["chain"]) for e in report.ok],
        residues=lengths.astype(np.int64),
        sequence=sequences,
        failed=[dict(f) for f in report.failed],
        meta={
            "protsteps_version": __version__,
            "encoder": backbone.origin,
            "encoder_name": backbone.record["encoder"]["name"],
            "teacher": backbone.record["teacher"]["name"],
            "dim": dim,
        },
    )
    if per_residue:
        out.residue_embeddings, out.residue_number, out.offsets = residue_rows, numbers, offsets
    return out
