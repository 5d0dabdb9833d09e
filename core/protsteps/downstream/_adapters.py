"""Adapters: label files in the formats users already have -> :class:`LabelledSet`.

Two formats of the paper's downstream tasks:

- :func:`protfunct`: IEConv's ProtFunct enzyme-reaction benchmark (Hermosilla et al. 2021),
  chains ``pdb.CHAIN`` with one of 384 EC numbers, structures looked up by PDB id and chain
  in a folder.
- :func:`deeploc`: DeepLoc subcellular location and membrane labels keyed by UniProt
  accession, structures from the AlphaFold DB (``AF-<id>-F1-model_v<N>.pdb[.gz]``).

Both report every labelled entry whose structure is not found as a :class:`Skipped` row.

With the manifest (:func:`~protsteps.downstream.read_manifest`) they are the three label
formats of the built-in plugin ``downstream`` (:func:`manifest_format`,
:func:`protfunct_format`, :func:`deeploc_format`), registered through the hook
``protsteps_register_label_formats`` like a plugin's; :func:`read_labels` reads a file in
any registered format.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from .._text import count
from ..errors import ProtstepsError
from ..extensions import LabelOptions
from ..registry import Catalog, default_catalog
from ..structure import SUFFIXES, is_structure_path
from ..structure._io import SUFFIX_LIST
from ._labels import (
    LabelledChain,
    LabelledSet,
    ManifestError,
    Skipped,
    Split,
    normalize_split,
    read_manifest,
    read_table,
    read_text,
    require_column,
)

__all__ = [
    "StructureIndex",
    "protfunct",
    "deeploc",
    "PROTFUNCT_LABELS",
    "DEEPLOC_ID_COLUMNS",
    "read_labels",
    "manifest_format",
    "protfunct_format",
    "deeploc_format",
]

#: label columns of the ProtFunct adapter: the full EC number or its first digit
PROTFUNCT_LABELS = ("ec_number", "ec_class")
_PROTFUNCT_SPLITS: tuple[tuple[str, Split], ...] = (
    ("training.txt", "train"),
    ("validation.txt", "valid"),
    ("testing.txt", "test"),
)

#: id column names the DeepLoc adapter recognises (any case) when none is named
DEEPLOC_ID_COLUMNS = ("id", "acc", "accession", "uniprot", "uniprot_id", "uniprot_acc", "entry")
_DEEPLOC_MEMBRANE = {"M": "membrane", "S": "soluble"}
_AF_NAME = re.compile(r"^AF-(?P<id>.+)-F(?P<fragment>\d+)-model_v(?P<version>\d+)$", re.IGNORECASE)
_FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")


def _stem(path: Path) -> str:
    """The file name without ``.gz`` and the structure suffix (``1ABC_A.pdb.gz`` -> ``1ABC_A``)."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    base, dot, suffix = name.rpartition(".")
    return base if dot and f".{suffix.lower()}" in SUFFIXES else name


class StructureIndex:
    """The structure files under a folder (searched recursively), by lower-cased stem.

    Parameters
    ----------
    root: the folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ManifestError(f"structure folder {self.root} does not exist or is not a folder")
        self.by_stem: dict[str, list[Path]] = {}
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() and is_structure_path(p)):
            self.by_stem.setdefault(_stem(path).lower(), []).append(path)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_stem.values())

    def find(self, stems: Iterable[str]) -> tuple[Path | None, int]:
        """The first file whose stem is one of ``stems`` (tried in order, any case), and how
        many files matched that stem. Among several, the one spelled exactly like the stem
        wins, else the first in sorted order."""
        for stem in stems:
            found = self.by_stem.get(stem.lower())
            if found:
                exact = [p for p in found if _stem(p) == stem]
                return (exact or found)[0], len(found)
        return None, 0


def _read_lines(path: Path) -> list[tuple[int, str]]:
    text = read_text(path)
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def protfunct_candidates(pdb: str, chain: str) -> list[str]:
    """File stems tried for a ProtFunct chain, in order: chain files (``1abc.A``,
    ``1abc_A``, ``1abc-A``, ``1abcA``), then the whole entry (``1abc``)."""
    return [f"{pdb}.{chain}", f"{pdb}_{chain}", f"{pdb}-{chain}", f"{pdb}{chain}", pdb]


def protfunct(
    root: str | os.PathLike[str],
    structures: str | os.PathLike[str],
    *,
    label_column: str = "ec_number",
) -> LabelledSet:
    """The ProtFunct enzyme-reaction set of IEConv with its structures.

    Parameters
    ----------
    root:
        The folder holding ``chain_functions.txt`` (lines ``pdb.CHAIN,index``),
        ``unique_functions.txt`` (the EC number of each index, one per line, index 0 first)
        and the split files ``training.txt``, ``validation.txt``, ``testing.txt`` (one
        ``pdb.CHAIN`` per line).
    structures:
        A folder searched recursively for each chain's structure file, by name and in any
        case: ``1abc.A``, ``1abc_A``, ``1abc-A`` or ``1abcA`` (a file of that chain), else
        ``1abc`` (the whole entry), with any of ``.pdb .ent .cif .mmcif .bcif``, gzipped or not.
        The chain is always selected by its identifier inside the file.
    label_column:
        ``ec_number`` (the 384-class task of the paper) or ``ec_class`` (the first digit).

    Chains without a structure file, or in no split file, are :class:`Skipped` rows.
    """
    root = Path(root)
    if label_column not in PROTFUNCT_LABELS:
        raise ManifestError(
            f"ProtFunct labels are {' or '.join(PROTFUNCT_LABELS)}, not {label_column!r} (--label-column)"
        )
    if not root.is_dir():
        raise ManifestError(f"ProtFunct folder {root} does not exist or is not a folder")
    functions = [line for _, line in _read_lines(root / "unique_functions.txt")]
    splits: dict[str, Split] = {}
    for name, part in _PROTFUNCT_SPLITS:
        for _, line in _read_lines(root / name):
            splits[line] = part
    index = StructureIndex(structures)
    rows: list[LabelledChain] = []
    skipped: list[Skipped] = []
    ambiguous = 0
    mapping = root / "chain_functions.txt"
    for line_number, line in _read_lines(mapping):
        where = f"{mapping}:{line_number}"
        name, comma, number = line.partition(",")
        pdb, dot, chain = name.partition(".")
        if not comma or not dot or not pdb or not chain:
            raise ManifestError(f"{where}: expected 'pdb.CHAIN,index', got {line!r}")
        try:
            function = functions[int(number)]
        except (ValueError, IndexError):
            raise ManifestError(
                f"{where}: {number!r} is not an index of unique_functions.txt (0..{len(functions) - 1})"
            ) from None
        label = function if label_column == "ec_number" else function.split(".")[0]
        origin = f"{mapping.name}:{line_number}"
        split = splits.get(name)
        if split is None:
            skipped.append(Skipped(origin, "", chain, label, f"{name} is in no split file"))
            continue
        path, matches = index.find(protfunct_candidates(pdb, chain))
        if path is None:
            skipped.append(
                Skipped(
                    origin,
                    "",
                    chain,
                    label,
                    f"no structure file for {name} in {index.root} "
                    f"(looked for {pdb}.{chain}, {pdb}_{chain}, {pdb}-{chain}, {pdb}{chain}, {pdb}; "
                    f"any case, {SUFFIX_LIST}, gzipped or not)",
                )
            )
            continue
        ambiguous += matches > 1
        rows.append(LabelledChain(str(path), chain, (label,), split, f"{pdb.lower()}.{chain}", origin))
    notes = []
    if ambiguous:
        notes.append(
            f"{count(ambiguous, 'chain')} matched several files differing only in case; the exact spelling "
            "(else the first in sorted order) was taken"
        )
    settings = {"format": "protfunct", "structures": str(index.root)}
    return LabelledSet(str(root), label_column, rows, skipped, notes, settings)


class AlphaFoldIndex:
    """AlphaFold DB model files under a folder, by UniProt accession (upper case): the
    newest model version of fragment F1, ``.pdb`` before ``.cif`` for the same version."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ManifestError(f"structure folder {self.root} does not exist or is not a folder")
        self.versions: dict[str, list[int]] = {}
        best: dict[str, tuple[int, int, str, Path]] = {}
        for path in self.root.rglob("*"):
            if not path.is_file() or not is_structure_path(path):
                continue
            match = _AF_NAME.match(_stem(path))
            if match is None or int(match["fragment"]) != 1:
                continue
            accession, version = match["id"].upper(), int(match["version"])
            self.versions.setdefault(accession, []).append(version)
            pdb_first = 0 if SUFFIXES.get("." + _stem_suffix(path)) == "pdb" else 1
            rank = (-version, pdb_first, path.name, path)
            if accession not in best or rank < best[accession]:
                best[accession] = rank
        self.files = {accession: rank[3] for accession, rank in best.items()}

    def find(self, accession: str) -> Path | None:
        return self.files.get(accession.strip().upper())


def _stem_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.rpartition(".")[2]


def _deeploc_fasta(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """DeepLoc 1.0's FASTA: headers ``>ACC Location-M|S|U [test]`` as table rows with the
    columns ``id``, ``location``, ``membrane`` and ``split``."""
    rows = []
    for line_number, line in _read_lines(path):
        if not line.startswith(">"):
            continue
        words = line[1:].split()
        if len(words) < 2 or "-" not in words[1]:
            raise ManifestError(
                f"{path}:{line_number}: expected a DeepLoc header '>ACCESSION Location-M|S|U [test]', got {line!r}"
            )
        location, _, flag = words[1].rpartition("-")
        membrane = _DEEPLOC_MEMBRANE.get(flag.upper(), "")
        split = "test" if any(w.lower() == "test" for w in words[2:]) else "train"
        rows.append(
            (line_number, {"id": words[0], "location": location, "membrane": membrane, "split": split})
        )
    if not rows:
        raise ManifestError(f"{path}: no FASTA headers ('>ACCESSION Location-M|S|U [test]') found")
    return ["id", "location", "membrane", "split"], rows


def deeploc(
    labels: str | os.PathLike[str],
    structures: str | os.PathLike[str],
    *,
    label_column: str = "location",
    id_column: str | None = None,
    split_column: str = "split",
) -> LabelledSet:
    """DeepLoc-style labels keyed by UniProt accession, with AlphaFold DB structures.

    Parameters
    ----------
    labels:
        Either a CSV/TSV file with a header: an accession column (``id_column``, else the
        first of ``id, acc, accession, uniprot, uniprot_id, uniprot_acc, entry`` in any
        case), the label column, and optionally a split column (train/valid/test);
        or DeepLoc 1.0's FASTA file (``.fasta/.fa/.faa/.fas``), whose headers
        ``>Q9H400 Cell.membrane-M test`` give the columns ``location`` (10 classes),
        ``membrane`` (``M`` -> membrane, ``S`` -> soluble; ``U``, unknown, is skipped) and
        the split (``test`` when the header says so, else train).
    structures:
        A folder searched recursively for ``AF-<accession>-F1-model_v<N>`` files
        (``.pdb``/``.cif``, gzipped or not); the newest version ``N`` is taken.
    label_column:
        ``location`` or ``membrane`` for the FASTA file; any column of a CSV/TSV.

    Accessions without a structure file and rows without a label are :class:`Skipped`.
    """
    path = Path(labels)
    if path.suffix.lower() in _FASTA_SUFFIXES:
        header, table = _deeploc_fasta(path)
        if label_column not in ("location", "membrane"):
            raise ManifestError(
                f"{path}: DeepLoc FASTA labels are 'location' or 'membrane', not {label_column!r} (--label-column)"
            )
        id_name, split_name = "id", "split"
    else:
        header, table = read_table(path)
        if id_column is None:
            lowered = {c.lower(): c for c in header}
            id_name = next((lowered[c] for c in DEEPLOC_ID_COLUMNS if c in lowered), "")
            if not id_name:
                raise ManifestError(
                    f"{path}: no accession column (looked for {', '.join(DEEPLOC_ID_COLUMNS)}, any case); "
                    f"columns: {', '.join(header)}; name it with --id-column"
                )
        else:
            require_column(path, header, id_column, "--id-column")
            id_name = id_column
        require_column(path, header, label_column, "--label-column")
        split_name = split_column if split_column in header else ""
        if not split_name and split_column != "split":
            require_column(path, header, split_column, "--split-column")
    index = AlphaFoldIndex(structures)
    rows: list[LabelledChain] = []
    skipped: list[Skipped] = []
    for line_number, cells in table:
        origin = f"{path.name}:{line_number}"
        accession, label = cells[id_name], cells[label_column]
        if not accession:
            skipped.append(Skipped(origin, "", "", label, "no accession"))
            continue
        if not label:
            reason = f"no label in column {label_column!r}"
            if label_column == "membrane" and path.suffix.lower() in _FASTA_SUFFIXES:
                reason = "membrane label unknown (U)"
            skipped.append(Skipped(origin, "", "", "", f"{accession}: {reason}"))
            continue
        file = index.find(accession)
        if file is None:
            skipped.append(
                Skipped(
                    origin,
                    "",
                    "",
                    label,
                    f"no AlphaFold file AF-{accession}-F1-model_v*.pdb/.cif(.gz) in {index.root}",
                )
            )
            continue
        split = (
            normalize_split(cells[split_name], f"{path}:{line_number}")
            if split_name and cells[split_name]
            else None
        )
        rows.append(LabelledChain(str(file), None, (label,), split, accession.upper(), origin))
    notes = []
    several = sum(1 for r in rows if len(index.versions.get(r.group or "", [])) > 1)
    if several:
        notes.append(f"{several} accessions have several AlphaFold model versions; the newest was taken")
    settings = {
        "format": "deeploc",
        "structures": str(index.root),
        "id_column": id_name,
        "split_column": split_name,
    }
    return LabelledSet(str(path), label_column, rows, skipped, notes, settings)


# ---------------------------------------------------------------------------- label formats
# The readers registered by the built-in plugin ``downstream``: ``(path, LabelOptions) ->
# LabelledSet``, each applying its own defaults to the options not given.


def manifest_format(path: Path, options: LabelOptions) -> LabelledSet:
    """``--format manifest``: :func:`~protsteps.downstream.read_manifest`."""
    return read_manifest(
        path,
        label_column=options.label_column or "label",
        split_column=options.split_column or "split",
        group_column=options.group_column,
        label_separator=options.label_separator or ";",
    )


def protfunct_format(path: Path, options: LabelOptions) -> LabelledSet:
    """``--format protfunct``: :func:`protfunct` (``path`` is the ProtFunct folder)."""
    assert options.structures is not None  # the format needs structures: read_labels checks
    return protfunct(path, options.structures, label_column=options.label_column or "ec_number")


def deeploc_format(path: Path, options: LabelOptions) -> LabelledSet:
    """``--format deeploc``: :func:`deeploc`."""
    assert options.structures is not None
    return deeploc(
        path,
        options.structures,
        label_column=options.label_column or "location",
        id_column=options.id_column,
        split_column=options.split_column or "split",
    )


def read_labels(
    path: str | os.PathLike[str],
    format: str = "manifest",
    options: LabelOptions | None = None,
    catalog: Catalog | None = None,
) -> LabelledSet:
    """The :class:`LabelledSet` of ``path`` read by the label format registered as ``format``.

    An option the format does not take is refused, and so is a missing ``structures`` for a
    format that needs it, before the file is read. An exception other than a
    ``ProtstepsError`` raised by a plugin's reader becomes one naming the format and plugin.
    """
    options = options or LabelOptions()
    entry = (catalog or default_catalog()).extensions.get("label_format", format)
    label_format = entry.record
    refused = [f"--{name.replace('_', '-')}" for name in options.given() if name not in label_format.options]
    if refused:
        takes = ", ".join(f"--{o.replace('_', '-')}" for o in label_format.options) or "no options"
        raise ProtstepsError(f"--format {format} does not take {', '.join(refused)} (it takes {takes})")
    if label_format.needs_structures and options.structures is None:
        raise ProtstepsError(
            f"--format {format} needs --structures DIR (the folder holding the structure files)"
        )
    try:
        data = label_format.read(Path(path), options)
    except ProtstepsError:
        raise
    except Exception as exc:
        raise ProtstepsError(
            f"label format '{format}' of plugin '{entry.plugin}' could not read {path}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(data, LabelledSet):
        raise ProtstepsError(
            f"label format '{format}' of plugin '{entry.plugin}' returned {type(data).__name__}, "
            "expected protsteps.downstream.LabelledSet"
        )
    data.settings.setdefault("format", format)
    return data
