"""Write the list of structures to pretrain on, leaving out every labelled chain.

    python experiments/pretraining_inputs.py OUT_DIR \
        [--structures ../shared/data/structures] \
        [--labels ../shared/data/labels/scop2_chains.tsv ../shared/data/labels/ec_chains.tsv]

Writes ``OUT_DIR/pretrain_inputs.txt`` (one absolute path per line, readable by
``protsteps pretrain``) and ``OUT_DIR/left_out.tsv`` (each file left out and why).

A structure file is left out when

1. it is a file of a labelled set (any split: the splits of the experiment are drawn per
   seed, so every labelled chain may be a test chain), or
2. its name carries the PDB id of a labelled chain (``1ABC_A.pdb.gz``, ``1abcA.pdb.gz``,
   Docking Benchmark ``1ABC_r_u.pdb.gz``, whose id is the complex's), or
3. one of its chains resembles a labelled chain: at least half of the shorter sequence's
   5-mers occur in the other. This catches the same protein under another name, with
   other observed residues (e.g. two depositions of one chain); it is not a homology
   search, and remote homologs stay in.

The exact-name and 5-mer rules are conservative on purpose: they remove more than the
labelled files, so that no test chain (or a copy of it) is seen during pretraining.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
KMER = 5
RESEMBLANCE = 0.5
_PDB_ID = re.compile(r"^([0-9][a-z0-9]{3})", re.IGNORECASE)


def kmers(sequence: str, k: int = KMER) -> set[str]:
    return {sequence[i : i + k] for i in range(len(sequence) - k + 1)}


def resemblance(a: set[str], b: set[str]) -> float:
    """Fraction of the smaller k-mer set found in the other (0 when either is empty)."""
    if not a or not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return len(small & large) / len(small)


def labelled_chains(label_files: Iterable[Path]) -> list[dict[str, str]]:
    """Every labelled row: resolved path, chain, PDB id (from the ``pdb_chain`` column)."""
    rows = []
    for label_file in label_files:
        with open(label_file, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                path = (label_file.parent / row["path"]).resolve()
                pdb = row.get("pdb_chain", "").split(".")[0].lower() or path.name[:4].lower()
                rows.append({"path": str(path), "chain": row.get("chain", ""), "pdb": pdb})
    return rows


def pdb_id(path: Path) -> str | None:
    match = _PDB_ID.match(path.name)
    return match.group(1).lower() if match else None


def select(structures: Path, label_files: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to pretrain on and ``(file, reason)`` for each one left out."""
    from protsteps.errors import ProtstepsError
    from protsteps.structure import is_structure_path, read_chains

    labelled = labelled_chains(label_files)
    labelled_files = {r["path"] for r in labelled}
    labelled_ids = {r["pdb"] for r in labelled}
    labelled_kmers: list[tuple[str, set[str]]] = []
    for r in labelled:
        for chain in read_chains(r["path"], [r["chain"]] if r["chain"] else None):
            labelled_kmers.append((f"{Path(r['path']).name}:{chain.chain_id}", kmers(chain.sequence)))
    keep: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    for path in sorted(p for p in structures.rglob("*") if p.is_file() and is_structure_path(p)):
        if str(path.resolve()) in labelled_files:
            left_out.append((path, "a labelled file"))
            continue
        if pdb_id(path) in labelled_ids:
            left_out.append((path, f"PDB id {pdb_id(path)} of a labelled chain"))
            continue
        try:
            chains = read_chains(path)
        except ProtstepsError:
            keep.append(path)  # unreadable: pretraining reports it, and it cannot leak
            continue
        reason = None
        for chain in chains:
            mine = kmers(chain.sequence)
            for name, theirs in labelled_kmers:
                score = resemblance(mine, theirs)
                if score >= RESEMBLANCE:
                    reason = (
                        f"chain {chain.chain_id} resembles labelled {name} ({KMER}-mer overlap {score:.2f})"
                    )
                    break
            if reason:
                break
        if reason:
            left_out.append((path, reason))
        else:
            keep.append(path)
    return keep, left_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for pretrain_inputs.txt and left_out.tsv")
    parser.add_argument("--structures", type=Path, default=SHARED / "structures")
    parser.add_argument(
        "--labels",
        type=Path,
        nargs="+",
        default=[SHARED / "labels" / "scop2_chains.tsv", SHARED / "labels" / "ec_chains.tsv"],
    )
    args = parser.parse_args(argv)
    keep, left_out = select(args.structures, args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pretrain_inputs.txt").write_text("".join(f"{p.resolve()}\n" for p in keep))
    with open(args.out / "left_out.tsv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows([str(p), reason] for p, reason in left_out)
    print(
        f"{len(keep)} structure files to pretrain on, {len(left_out)} left out "
        f"-> {args.out / 'pretrain_inputs.txt'}, {args.out / 'left_out.tsv'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
