"""Labelled chains: the manifest file, the table every adapter produces, and splits.

A manifest is a CSV or TSV file with a header row::

    path                              chain  label   split
    structures/1abc.pdb.gz            A      2.7.1   train
    /data/afdb/AF-P12345-F1-model_v4.pdb     membrane

``path`` is relative to the manifest's folder (absolute paths are kept); ``chain`` is
optional (without it the file must hold exactly one protein chain); the label column is
chosen by name; ``split`` is optional (train / valid / test, with the usual spellings).
Several labels of one protein (multi-label targets such as several EC numbers) are written
in one cell separated by ``;``.

One chain (the same structure file, followed through symbolic links, and chain) is one row:
rows that repeat a chain with the same labels are merged into the first (with a warning),
rows that give it different labels or different splits are refused naming both lines
(:func:`merge_duplicate_rows`), so a chain is never on two sides of a split.

Adapters for other label formats (:mod:`protsteps.downstream._adapters`) return the same
:class:`LabelledSet`, so everything downstream sees one shape.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import closest
from ..errors import ProtstepsError
from ..files import atomic_write_text

__all__ = [
    "SPLITS",
    "Split",
    "ManifestError",
    "LabelledChain",
    "Skipped",
    "LabelledSet",
    "normalize_split",
    "read_manifest",
    "read_table",
    "stratified_split",
    "merge_duplicate_rows",
]

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")

#: spellings accepted in a split column, lower-cased
_SPLIT_NAMES: dict[str, Split] = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "dev": "valid",
    "test": "test",
    "testing": "test",
    "te": "test",
}

#: what one cell of a label column is split on when a protein has several labels
LABEL_SEPARATOR = ";"


class ManifestError(ProtstepsError):
    """A label file cannot be read as asked; the message names the file (and line)."""


def normalize_split(value: str, where: str) -> Split:
    """``train``/``training``, ``valid``/``validation``/``val``/``dev``, ``test``/``testing``
    (any case) -> ``train``, ``valid`` or ``test``."""
    split = _SPLIT_NAMES.get(value.strip().lower())
    if split is None:
        raise ManifestError(
            f"{where}: split {value!r} is not one of train, valid, test "
            f"(also accepted, in any case: {', '.join(n for n, v in _SPLIT_NAMES.items() if n != v)})"
        )
    return split


@dataclasses.dataclass(frozen=True)
class LabelledChain:
    """One labelled protein chain.

    path: the structure file (absolute, or as the label file gave it when it was absolute).
    chain: the chain identifier, or ``None`` when the file holds one chain.
    labels: one label (single-label tasks) or several (multi-label tasks).
    split: ``train``, ``valid`` or ``test``; ``None`` when the label file gave none.
    group: rows with the same group go to the same split when splits are drawn
        (e.g. the same protein in two files); ``None``: its own group.
    origin: where the row came from (``labels.tsv:12``), for messages.
    pdb_chain: the PDB chain the row is (``1abc.a``, from a ``pdb_chain``-like column of
        the manifest), used to warn when one chain is on two sides of a split; ``None``:
        unknown.
    """

    path: str
    chain: str | None
    labels: tuple[str, ...]
    split: Split | None = None
    group: str | None = None
    origin: str = ""
    pdb_chain: str | None = None

    @property
    def spec(self) -> str:
        """The input spec of :func:`protsteps.featurize.featurize_many` (``path:CHAIN``)."""
        return f"{self.path}:{self.chain}" if self.chain else self.path


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A labelled row that cannot be used, and why (missing structure, no label, ...)."""

    origin: str
    path: str
    chain: str
    label: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LabelledSet:
    """What a manifest or an adapter gives: usable rows, skipped rows and notes.

    source: the label file (or folder) the rows came from.
    label_column: the label that was read (``label``, ``ec_number``, ``location``, ...).
    rows: the labelled chains whose structure file was found.
    skipped: the rows that cannot be used, each with the reason; never dropped silently.
    notes: what was decided while reading (e.g. which of two files was taken).
    settings: how the rows were read (format and options), recorded in a run's settings.
    columns: the label file's columns (a manifest's header), for advice in messages.
    """

    source: str
    label_column: str
    rows: list[LabelledChain]
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    columns: list[str] = dataclasses.field(default_factory=list)

    @property
    def multi_label(self) -> bool:
        """Whether any row has more than one label."""
        return any(len(r.labels) > 1 for r in self.rows)

    def classes(self) -> list[str]:
        """Every label that occurs, sorted."""
        return sorted({label for row in self.rows for label in row.labels})

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the rows as a TSV manifest (absolute paths; ``split``, ``group`` and
        ``pdb_chain`` when any row has one), readable by :func:`read_manifest`."""
        with_split = any(r.split for r in self.rows)
        with_group = any(r.group for r in self.rows)
        with_pdb_chain = any(r.pdb_chain for r in self.rows)
        header = ["path", "chain", self.label_column] + (["split"] if with_split else [])
        header += ["group"] if with_group else []
        header += ["pdb_chain"] if with_pdb_chain else []
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for r in self.rows:
            row = [r.path, r.chain or "", LABEL_SEPARATOR.join(r.labels)]
            row += [r.split or ""] if with_split else []
            row += [r.group or ""] if with_group else []
            row += [r.pdb_chain or ""] if with_pdb_chain else []
            writer.writerow(row)
        atomic_write_text(path, buffer.getvalue())


def _delimiter(path: Path, head: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    first = head.splitlines()[0] if head else ""
    return "\t" if "\t" in first else ","


def read_text(path: Path, what: str = "", encoding: str = "utf-8") -> str:
    """The text of a label-side file; a missing or unreadable one is a :class:`ManifestError`
    naming it (``what`` prefixes the path: "label file ")."""
    try:
        return path.read_text(encoding)
    except FileNotFoundError:
        raise ManifestError(f"{what}{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{what}{path} cannot be read as text: {exc}") from None


def read_table(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the rows (with their line numbers) of a CSV or TSV file.

    The delimiter comes from the extension (``.tsv``/``.tab``: tab, ``.csv``: comma), else
    from the header line (tab when it holds one). Blank rows and rows whose first cell
    starts with ``#`` are skipped; cells are stripped.
    """
    path = Path(path)
    text = read_text(path, "label file ", "utf-8-sig")
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(path, text))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    for cells in reader:
        line = reader.line_num
        cells = [c.strip() for c in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if header is None:
            header = cells
            duplicates = sorted({c for c in header if header.count(c) > 1})
            if duplicates:
                raise ManifestError(f"{path}:{line}: column {duplicates[0]!r} appears twice in the header")
            continue
        if len(cells) > len(header):
            raise ManifestError(
                f"{path}:{line}: {len(cells)} cells but the header has {len(header)} columns "
                "(a label holding the delimiter must be quoted)"
            )
        cells += [""] * (len(header) - len(cells))
        rows.append((line, dict(zip(header, cells, strict=True))))
    if header is None:
        raise ManifestError(f"label file {path} is empty (a header row is required)")
    return header, rows


def require_column(path: Path, header: Sequence[str], name: str, option: str) -> None:
    """Raise a :class:`ManifestError` listing the columns when ``name`` is not one."""
    if name in header:
        return
    hint = closest(name, list(header))
    did_you_mean = f" (did you mean {hint!r}?)" if hint else ""
    raise ManifestError(
        f"{path}: no column {name!r}{did_you_mean}; columns: {', '.join(header)}; choose one with {option}"
    )


def split_labels(cell: str, separator: str = LABEL_SEPARATOR) -> tuple[str, ...]:
    """The labels of one cell: split on ``separator``, stripped, empty parts and repeats
    removed (order kept)."""
    parts = [p.strip() for p in cell.split(separator)] if separator else [cell.strip()]
    return tuple(dict.fromkeys(p for p in parts if p))


def read_manifest(
    path: str | os.PathLike[str],
    *,
    label_column: str = "label",
    split_column: str = "split",
    group_column: str | None = None,
    label_separator: str = LABEL_SEPARATOR,
) -> LabelledSet:
    """Read a manifest (CSV or TSV) of labelled structures.

    Parameters
    ----------
    path:
        The manifest; ``path`` cells are relative to its folder unless absolute.
    label_column:
        The column holding the label(s).
    split_column:
        The column holding train/valid/test; when the file has no such column the rows get
        no split (one is drawn later). Naming a column that is absent is only an error when
        it is not the default ``split``.
    group_column:
        Rows with the same value here are kept in the same split when splits are drawn.
    label_separator:
        Splits a cell into several labels (multi-label targets); ``""`` keeps cells whole.

    Rows whose file does not exist or whose label is empty become :class:`Skipped` rows
    with the reason. A split value that is not train/valid/test is an error naming the line.
    """
    path = Path(path)
    header, rows = read_table(path)
    require_column(path, header, "path", "a 'path' column (structure files)")
    require_column(path, header, label_column, "--label-column")
    has_split = split_column in header
    if not has_split and split_column != "split":
        require_column(path, header, split_column, "--split-column")
    if group_column:
        require_column(path, header, group_column, "--group-column")
    from ._leakage import find_pdb_chain_column, normalize_pdb_chain

    used = ["path", "chain", label_column, split_column, group_column or ""]
    pdb_chain_column = find_pdb_chain_column(header, [cells for _, cells in rows], used)
    base = path.parent
    labelled: list[LabelledChain] = []
    skipped: list[Skipped] = []
    for line, cells in rows:
        origin = f"{path.name}:{line}"
        file_text, chain = cells["path"], cells.get("chain", "") or None
        label_text = cells[label_column]
        if not file_text:
            skipped.append(Skipped(origin, "", chain or "", label_text, "no path"))
            continue
        # normpath, not resolve: '..' is folded but symbolic links keep the name given
        file = Path(os.path.normpath(file_text if os.path.isabs(file_text) else base / file_text))
        labels = split_labels(label_text, label_separator)
        if not labels:
            skipped.append(
                Skipped(origin, str(file), chain or "", "", f"no label in column {label_column!r}")
            )
            continue
        if not file.is_file():
            skipped.append(
                Skipped(origin, str(file), chain or "", label_text, f"structure file not found: {file}")
            )
            continue
        split = None
        if has_split and cells[split_column]:
            split = normalize_split(cells[split_column], f"{path}:{line}")
        group = cells[group_column] or None if group_column else None
        pdb_chain = normalize_pdb_chain(cells[pdb_chain_column]) if pdb_chain_column else None
        labelled.append(LabelledChain(str(file), chain, labels, split, group, origin, pdb_chain))
    given = [r.split for r in labelled]
    if has_split and any(given) and not all(given):
        line_of_missing = next(r.origin for r in labelled if r.split is None).rpartition(":")[2]
        raise ManifestError(
            f"{path}:{line_of_missing}: no value in column {split_column!r}, while other rows have one; give every "
            "row a split, or none (to draw a stratified split)"
        )
    settings = {
        "format": "manifest",
        "split_column": split_column,
        "group_column": group_column,
        "label_separator": label_separator,
        "pdb_chain_column": pdb_chain_column,
    }
    return LabelledSet(str(path), label_column, labelled, skipped, settings=settings, columns=list(header))


def _chain_key(row: LabelledChain) -> tuple[str, str]:
    """What makes two rows one chain: the file (symbolic links followed, so two names of
    one file are one file) and the chain."""
    return os.path.realpath(row.path), row.chain or ""


def _describe_chain(row: LabelledChain) -> str:
    return f"chain {row.chain} of {row.path}" if row.chain else f"{row.path} (its one chain)"


def merge_duplicate_rows(data: LabelledSet) -> LabelledSet:
    """``data`` with one row per chain.

    Rows that repeat a chain with the same labels (in any order) and no conflicting split
    are merged into the first one, and a warning in :attr:`LabelledSet.notes` names the
    lines. A chain given different labels, or two different splits (``train`` on one line,
    ``test`` on another), is a :class:`ManifestError` naming the file, the chain and both
    lines with their values: a protein on two sides of a split would be scored on what it
    was trained on. A chain with a split on one line and none on another takes the split.
    """
    first: dict[tuple[str, str], int] = {}
    merged: list[LabelledChain] = []
    repeats: dict[int, list[str]] = {}
    for row in data.rows:
        key = _chain_key(row)
        if key not in first:
            first[key] = len(merged)
            merged.append(row)
            continue
        index = first[key]
        kept = merged[index]
        where = f"{data.source}: {_describe_chain(kept)} is listed twice"
        if set(kept.labels) != set(row.labels):
            raise ManifestError(
                f"{where} with different labels: {LABEL_SEPARATOR.join(kept.labels)!r} ({kept.origin}) and "
                f"{LABEL_SEPARATOR.join(row.labels)!r} ({row.origin}); keep one row per chain with its label"
            )
        if kept.split is not None and row.split is not None and kept.split != row.split:
            raise ManifestError(
                f"{where} in different splits: {kept.split} ({kept.origin}) and {row.split} ({row.origin}); "
                "a chain must be on one side of a split: keep one row per chain"
            )
        if kept.split is None and row.split is not None:
            merged[index] = dataclasses.replace(kept, split=row.split)
        repeats.setdefault(index, []).append(row.origin)
    if not repeats:
        return data
    notes = list(data.notes)
    for index, origins in list(repeats.items())[:5]:
        row = merged[index]
        notes.append(
            f"warning: {_describe_chain(row)} is listed {len(origins) + 1} times with the same label "
            f"({row.origin}, {', '.join(origins)}); used once"
        )
    if len(repeats) > 5:
        notes.append(f"warning: and {len(repeats) - 5} more chains listed more than once, each used once")
    return dataclasses.replace(data, rows=merged, notes=notes)


def _units(groups: Sequence[str | None]) -> list[list[int]]:
    """Indices grouped: rows with the same group form one unit, a row without a group is
    its own; units in order of first appearance."""
    units: dict[object, list[int]] = {}
    for index, group in enumerate(groups):
        units.setdefault(group if group is not None else ("row", index), []).append(index)
    return list(units.values())


def stratified_split(
    strata: Sequence[str],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    groups: Sequence[str | None] | None = None,
) -> list[Split]:
    """A seeded split that keeps each stratum's share in every part.

    Parameters
    ----------
    strata: one stratum per row (its class; for multi-label rows, the rarest label).
    fractions: train, valid and test shares (summing to 1).
    seed: the same seed, strata and groups give the same split.
    groups: rows of one group go to the same part (a group takes the stratum of its first
        row); ``None`` gives every row its own group.

    Returns
    -------
    One of ``train``, ``valid``, ``test`` per row.

    The valid and test parts get ``round(U * share)`` units each (U the number of units; at
    least one when the share is positive and there are three units or more). Each stratum
    first gets the whole part of its quota (``floor(n * share)``); the units still missing
    go to the strata with the largest remainders, never taking the last training unit of a
    stratum while another can give one.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ProtstepsError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    groups = list(groups) if groups is not None else [None] * len(strata)
    if len(groups) != len(strata):
        raise ValueError("strata and groups must have the same length")
    units = _units(groups)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    by_stratum: dict[str, list[int]] = {}
    for unit_index, members in enumerate(units):
        by_stratum.setdefault(strata[members[0]], []).append(unit_index)
    names = sorted(by_stratum)
    for name in names:  # shuffled in sorted order, so the result depends on the seed alone
        shuffled = by_stratum[name]
        by_stratum[name] = [shuffled[i] for i in rng.permutation(len(shuffled))]
    total = len(units)
    shares: dict[Split, float] = {"valid": float(fractions[1]), "test": float(fractions[2])}
    held_share = shares["valid"] + shares["test"]
    held: tuple[Split, Split] = ("test", "valid")
    wanted: dict[Split, int] = {}
    for part in held:
        count = round(total * shares[part])
        wanted[part] = max(count, 1) if shares[part] > 0 and total >= 3 else count
    taken: dict[str, dict[Split, int]] = {
        name: {part: int(np.floor(len(by_stratum[name]) * shares[part])) for part in held} for name in names
    }
    tiebreak = {name: float(rng.random()) for name in names}
    for part in held:
        missing = wanted[part] - sum(taken[n][part] for n in names)

        def owed(name: str, part: Split = part) -> tuple[float, float, float]:
            # how much of a unit the stratum is owed in this part, then in both held-out
            # parts together (so extra units spread over strata), then a seeded tiebreak
            size = len(by_stratum[name])
            return (
                -(size * shares[part] - taken[name][part]),
                -(size * held_share - taken[name]["valid"] - taken[name]["test"]),
                tiebreak[name],
            )

        order = sorted(names, key=owed)
        for keep_one in (True, False):
            for name in order:
                if missing <= 0:
                    break
                left = len(by_stratum[name]) - taken[name]["valid"] - taken[name]["test"]
                if left > (1 if keep_one else 0):
                    taken[name][part] += 1
                    missing -= 1
    out: list[Split] = ["train"] * len(strata)
    for name in names:
        n_test, n_valid = taken[name]["test"], taken[name]["valid"]
        for position, unit_index in enumerate(by_stratum[name]):
            assigned: Split = (
                "test" if position < n_test else "valid" if position < n_test + n_valid else "train"
            )
            for index in units[unit_index]:
                out[index] = assigned
    return out


def rarest_label(rows: Iterable[tuple[str, ...]]) -> list[str]:
    """The stratum of each multi-label row: its least frequent label (ties: the smallest)."""
    rows = list(rows)
    counts: dict[str, int] = {}
    for labels in rows:
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    return [min(labels, key=lambda label: (counts[label], label)) for labels in rows]
