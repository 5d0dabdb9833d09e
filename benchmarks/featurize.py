"""How fast structures become residue graphs: the STEPS authors' way against ours.

Four ways over the same files, in one run:

(a) the authors' algorithm, re-implemented faithfully: a Bio.PDB parse, every residue pair
    visited in a Python double loop with its CA-CA distance, edges under 7 Å appended to
    lists, phi/psi from Bio.PDB internal coordinates;
(b) a Bio.PDB parse alone (the floor for any reader built on Bio.PDB's object tree);
(c) ``featurize_many`` with a cold (empty) cache and one worker: read, featurize, hash and
    write every graph;
(d) the same again, warm: every file is a cache hit;
(e) as (c) but with the Bio.PDB reference reader, to show what the columnar reader buys.

Run from the repository root:

    python benchmarks/featurize.py --files 300

It prints a Markdown table (structures per second and speed-up over (a)); ``--json FILE``
also writes the numbers.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ROOT.parent / "shared" / "data" / "structures"


def pick_files(count: int) -> list[Path]:
    """``count`` files spread evenly over the sorted shared structures (every folder)."""
    files = sorted(p for p in STRUCTURES.rglob("*") if p.is_file())
    if count >= len(files):
        return files
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in picks]


def bio_structure(path: Path):
    from Bio.PDB import MMCIFParser, PDBParser

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    parser = MMCIFParser(QUIET=True) if ".cif" in path.name else PDBParser(QUIET=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parser.get_structure(path.stem, io.StringIO(raw.decode("latin-1")))


def authors_graph(path: Path, out_dir: Path) -> int:
    """(a): the released STEPS preprocessing, re-implemented step by step: Bio.PDB parse;
    the sequence from Bio.PDB's CA-CA peptide builder; every residue (with a CA) of the first
    model visited pairwise in a Python double loop, the CA-CA distance taken with Bio.PDB's
    atom subtraction into an L x L matrix and, under 7 Å, both directions appended to the
    edge and bond-length lists by list concatenation (as the released code does); phi and
    psi from Bio.PDB internal coordinates; the result saved with ``np.save``. Returns the
    number of edges (so that the work cannot be skipped)."""
    from Bio.PDB.Polypeptide import CaPPBuilder

    structure = bio_structure(path)
    model = structure[0]
    peptides = CaPPBuilder().build_peptides(model)
    sequence = "".join(str(p.get_sequence()) for p in peptides)
    residues = [r for r in model.get_residues() if "CA" in r]
    count = len(residues)
    distances = np.zeros((count, count))
    sources: list[int] = []
    targets: list[int] = []
    bond_lengths: list[float] = []
    for i in range(count):
        for j in range(i + 1, count):
            distances[i, j] = residues[i]["CA"] - residues[j]["CA"]
            distances[j, i] = distances[i, j]
            if distances[i, j] < 7:
                sources = sources + [i, j]  # noqa: RUF005  (the released code concatenates)
                targets = targets + [j, i]  # noqa: RUF005
                bond_lengths = bond_lengths + [distances[i, j], distances[j, i]]  # noqa: RUF005
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.atom_to_internal_coordinates()
    angles = np.zeros((count, 2), dtype=np.float32)
    for r, residue in enumerate(residues):
        ic = residue.internal_coord
        if ic is not None:
            angles[r, 0] = ic.get_angle("phi") or 0.0
            angles[r, 1] = ic.get_angle("psi") or 0.0
    result = np.empty(5, dtype=object)
    result[:] = [
        sequence,
        distances.astype(np.float32),
        (sources, targets),
        np.array(bond_lengths, np.float32),
        angles,
    ]
    np.save(out_dir / f"{path.name}.npy", result, allow_pickle=True)
    return len(sources)


class Clock:
    """Wall-clock and CPU seconds of a block (CPU time is what this process used, which
    shifts less than wall time when other processes share the machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def time_per_file(files: list[Path], work) -> tuple[Clock, int]:
    ok = 0
    with Clock() as clock:
        for path in files:
            try:
                work(path)
                ok += 1
            except Exception:  # a file this method cannot read still costs its time
                pass
    return clock, ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=300, help="structures to use (default 300)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    import protsteps
    from protsteps.featurize import featurize_many

    files = pick_files(args.files)
    with Clock() as startup:
        protsteps.list_components()  # plugin discovery: once per process, not per structure
    rows: list[tuple[str, Clock, int]] = []

    with tempfile.TemporaryDirectory() as out:
        clock, ok = time_per_file(files, lambda path: authors_graph(path, Path(out)))
    rows.append(("(a) authors' algorithm: Bio.PDB, O(L^2) Python loop, IC angles", clock, ok))
    clock, ok = time_per_file(files, bio_structure)
    rows.append(("(b) Bio.PDB parse alone", clock, ok))
    with tempfile.TemporaryDirectory() as cache:
        with Clock() as clock:
            cold = featurize_many(files, cache_dir=cache, workers=1)
        rows.append(("(c) ours, cold cache, 1 worker", clock, len(files) - _failed(cold)))
        with Clock() as clock:
            warm = featurize_many(files, cache_dir=cache, workers=1)
        rows.append(("(d) ours, warm cache", clock, len(files) - _failed(warm)))
        assert warm.cache_hits == len(files)
    with tempfile.TemporaryDirectory() as cache:
        with Clock() as clock:
            bio = featurize_many(files, cache_dir=cache, workers=1, reader="biopython")
        rows.append(("(e) ours with the Bio.PDB reader, cold, 1 worker", clock, len(files) - _failed(bio)))

    count = len(files)
    base_wall, base_cpu = rows[0][1].wall, rows[0][1].cpu
    print(
        f"{count} files of ../shared/data/structures ({len(cold.ok)} chains featurized); "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"plugin discovery (once per process, excluded) {startup.wall:.2f} s\n"
    )
    print("| method | files read | wall s | structures/s | vs (a), wall | vs (a), CPU time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    results = []
    for label, clock, ok in rows:
        rate = count / clock.wall
        speedup_wall, speedup_cpu = base_wall / clock.wall, base_cpu / max(clock.cpu, 1e-9)
        print(
            f"| {label} | {ok} | {clock.wall:.2f} | {rate:.1f} | {speedup_wall:.0f}x | {speedup_cpu:.0f}x |"
        )
        results.append(
            {
                "method": label,
                "files_read": ok,
                "wall_seconds": clock.wall,
                "cpu_seconds": clock.cpu,
                "per_second": rate,
                "speedup_wall": speedup_wall,
                "speedup_cpu": speedup_cpu,
            }
        )
    if args.json:
        args.json.write_text(json.dumps({"files": count, "rows": results}, indent=2))


def _failed(report) -> int:
    ok_sources = {row["source"] for row in report.ok}
    return len({row["source"] for row in report.failed} - ok_sources)


if __name__ == "__main__":
    main()
