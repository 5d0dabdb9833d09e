"""The pretraining pool of the evidence experiment: every structure file of
``../shared/data/structures`` except those that share something with a labelled chain.

A file is left out (the first reason that applies is written) when

1. ``labelled file``: it is a file of a labelled set;
2. ``labelled PDB id``: its name carries the PDB id of a labelled chain;
3. ``sequence cluster``: one of its chains links to a labelled chain by the rule that built
   the labelled sets' ``sequence_cluster`` column (Smith-Waterman local alignment, BLOSUM62,
   gap open -10, extend -0.5; identity over the shorter sequence >= 40% and score >= 50), so
   it would join that chain's cluster;
4. ``SCOP2 superfamily``: one of its chains has, in SCOP2, a superfamily that a labelled
   chain has (where the file's own PDB id is known: a MaSIF file's name, a ``HEADER`` record
   or an mmCIF ``_entry.id``).

See the design in ``docs/experiments.md``.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

#: the link rule of the labelled sets' clustering (README-labelled-sets.md)
MIN_IDENTITY = 0.40
MIN_SCORE = 50.0
_PDB_ID = re.compile(r"^([0-9][a-z0-9]{3})", re.IGNORECASE)
_MASIF_NAME = re.compile(r"^([0-9][A-Za-z0-9]{3})_[A-Za-z0-9]+\.pdb", re.IGNORECASE)


@dataclass(frozen=True)
class Labelled:
    """One labelled row as the pool needs it."""

    path: str
    chain: str
    pdb: str
    cluster: str
    superfamily: str


def read_labelled(files: Iterable[tuple[Path, str]]) -> list[Labelled]:
    """The rows of the labelled TSVs; ``files`` pairs each TSV with its superfamily column."""
    rows = []
    for tsv, superfamily_column in files:
        with open(tsv, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                rows.append(
                    Labelled(
                        path=str((tsv.parent / row["path"]).resolve()),
                        chain=row["chain"],
                        pdb=row["pdb_chain"].split(".")[0].lower(),
                        cluster=row["sequence_cluster"],
                        superfamily=row.get(superfamily_column, "") or "",
                    )
                )
    return rows


def _aligner():
    from Bio import Align
    from Bio.Align import substitution_matrices

    return Align.PairwiseAligner(
        mode="local",
        substitution_matrix=substitution_matrices.load("BLOSUM62"),
        open_gap_score=-10.0,
        extend_gap_score=-0.5,
    )


def _clean(sequence: str) -> str:
    # BLOSUM62 has no letter for every odd residue code; unknown ones align as X
    return re.sub(r"[^ARNDCQEGHILKMFPSTWYVBZX]", "X", sequence.upper())


def link(aligner, a: str, b: str) -> tuple[float, float] | None:
    """``(identity, score)`` when ``a`` and ``b`` link by the clustering rule, else ``None``."""
    score = aligner.score(a, b)
    if score < MIN_SCORE:
        return None
    alignment = aligner.align(a, b)[0]
    identical = 0
    for (a0, a1), (b0, b1) in zip(*alignment.aligned, strict=True):
        identical += sum(x == y for x, y in zip(a[a0:a1], b[b0:b1], strict=True))
    identity = identical / min(len(a), len(b))
    return (identity, float(score)) if identity >= MIN_IDENTITY else None


def _first_link(job: tuple[str, Sequence[tuple[str, str]]]) -> tuple[str, float, float] | None:
    """The first labelled sequence ``job``'s sequence links to: ``(name, identity, score)``."""
    sequence, labelled = job
    aligner = _aligner()
    for name, other in labelled:
        found = link(aligner, sequence, other)
        if found:
            return name, found[0], found[1]
    return None


def own_pdb_id(path: Path) -> str | None:
    """The PDB id of the structure in ``path`` when the file says it: a MaSIF name
    (``1ABC_AB.pdb.gz``), a ``HEADER`` record or an mmCIF ``_entry.id``; else ``None``
    (Docking Benchmark names carry the complex's id, not the file's)."""
    if path.parent.name == "masif":
        match = _MASIF_NAME.match(path.name)
        return match.group(1).lower() if match else None
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    for line in head.splitlines():
        if line.startswith("HEADER") and len(line) >= 66 and _PDB_ID.match(line[62:66]):
            return line[62:66].lower()
        if line.startswith("_entry.id"):
            value = line.split()[-1].strip("'\"")
            return value.lower() if _PDB_ID.fullmatch(value) else None
    return None


def scop2_superfamilies(scop2_dir: Path) -> dict[tuple[str, str], set[str]]:
    """``(pdb id, chain)`` -> the SCOP2 superfamily node ids of its superfamily domains."""
    superfamily_of_domain: dict[str, str] = {}
    with gzip.open(scop2_dir / "scop-cla-latest.txt.gz", "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            fields = line.split()
            sf = next((p[3:] for p in fields[-1].split(",") if p.startswith("SF=")), None)
            if sf:
                superfamily_of_domain[fields[5]] = sf
    out: dict[tuple[str, str], set[str]] = {}
    with open(scop2_dir / "pdb_chain_scop2_uniprot.csv", newline="") as fh:
        lines = (line for line in fh if not line.startswith("#"))
        for row in csv.DictReader(lines):
            sf = superfamily_of_domain.get(row["SF_DOMID"])
            if sf:
                out.setdefault((row["PDB"].lower(), row["CHAIN"]), set()).add(sf)
    return out


@dataclass
class Pool:
    """The files to pretrain on and, for each file left out, the rule and the reason."""

    keep: list[Path]
    excluded: list[tuple[Path, str, str]]


def build_pool(
    structures: Sequence[Path],
    labelled: Sequence[Labelled],
    scop2_dir: Path,
    *,
    workers: int = 1,
    say: Callable[[str], None] = print,
) -> Pool:
    """Apply the four rules of the module docstring to ``structures`` (in order)."""
    from protsteps.errors import ProtstepsError
    from protsteps.structure import read_chains

    labelled_files = {r.path for r in labelled}
    labelled_ids = {r.pdb for r in labelled}
    labelled_sequences: dict[str, str] = {}
    for r in labelled:
        for chain in read_chains(r.path, [r.chain]):
            name = f"{Path(r.path).name}:{chain.chain_id} ({r.cluster})"
            labelled_sequences.setdefault(_clean(chain.sequence), name)
    targets = [(name, sequence) for sequence, name in labelled_sequences.items()]
    superfamilies = scop2_superfamilies(scop2_dir)
    labelled_sf = {r.superfamily for r in labelled if r.superfamily}

    excluded: list[tuple[Path, str, str]] = []
    candidates: list[tuple[Path, list]] = []
    for path in structures:
        pdb = _PDB_ID.match(path.name)
        if str(path.resolve()) in labelled_files:
            excluded.append((path, "labelled file", "a file of a labelled set"))
        elif pdb and pdb.group(1).lower() in labelled_ids:
            excluded.append(
                (path, "labelled PDB id", f"its name carries {pdb.group(1).lower()}, a labelled PDB id")
            )
        else:
            try:
                candidates.append((path, read_chains(path)))
            except ProtstepsError:
                candidates.append((path, []))  # unreadable: pretrain reports it, and it cannot leak

    sequences = sorted({_clean(c.sequence) for _, chains in candidates for c in chains if c.sequence})
    say(f"pool: aligning {len(sequences)} distinct sequences against {len(targets)} labelled ones")
    jobs = [(s, targets) for s in sequences]
    if workers > 1:
        with ProcessPoolExecutor(workers) as executor:
            found = list(executor.map(_first_link, jobs, chunksize=8))
    else:
        found = [_first_link(job) for job in jobs]
    links = dict(zip(sequences, found, strict=True))

    keep: list[Path] = []
    for path, chains in candidates:
        reason: tuple[str, str] | None = None
        for chain in chains:
            hit = links.get(_clean(chain.sequence))
            if hit:
                reason = (
                    "sequence cluster",
                    f"chain {chain.chain_id} links to labelled {hit[0]}: identity {hit[1]:.2f}, score {hit[2]:.0f}",
                )
                break
        pdb_id = own_pdb_id(path) if reason is None else None
        if reason is None and pdb_id:
            for chain in chains:
                shared = superfamilies.get((pdb_id, chain.chain_id), set()) & labelled_sf
                if shared:
                    reason = (
                        "SCOP2 superfamily",
                        f"chain {pdb_id}.{chain.chain_id} is in SCOP2 superfamily {min(shared)} of a labelled chain",
                    )
                    break
        if reason:
            excluded.append((path, *reason))
        else:
            keep.append(path)
    return Pool(keep, excluded)
