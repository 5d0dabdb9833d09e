"""How fast structures become residue graphs: the STEPS authors' way against ours, per folder.

For each folder of structures (by default the four under ../shared/data/structures: MaSIF,
Docking Benchmark 5.5, MDAnalysis and Biopython test files), over the same files:

(a) the authors' algorithm, re-implemented faithfully from the released code's
    ``build_protein.py``: a Bio.PDB parse, every residue pair visited in a Python double
    loop with its CA-CA distance, edges under 7 Å appended to lists, phi/psi from Bio.PDB
    internal coordinates, the result saved with ``np.save``;
(b) a Bio.PDB parse alone (the floor for any reader built on Bio.PDB's object tree);
(c) ``featurize_many`` with a cold (empty) cache and one worker: read, hash, parse,
    featurize and write every graph to the store;
(d) the same again, warm: every file is a cache hit;
(e) as (c) but with the Bio.PDB reference reader, to show what the columnar reader buys.

Time is the CPU time of this process (``time.process_time``), which other processes on a
shared machine disturb far less than wall time; wall time is reported too. In each round
(a) runs over the folder in ``--slices`` parts (5) with one run of (c) over the whole folder
beside each part, (c) after the part in even rounds and before it in odd ones, so that both
sample the same minutes of the machine and a change of load weighs on both sides of the
ratio alike: (c) takes a fraction of a second a folder, and timed once it would weigh
whatever the machine did in that fraction of a second against the minute (a) averages over.
A round's (c) is the mean of its runs; (b), (d) and (e) run once a round. Before each
timed run the garbage of the runs before it is collected, outside the clocks (Bio.PDB leaves
reference cycles that Python's collector would otherwise free in the next method's time).
(a) is then not charged for freeing what it leaves at the end of a slice, so the ratio
errs against (c). The ratio (a)/(c)
is the sum of (a)'s CPU seconds over the rounds divided by (c)'s, with the lowest and highest
single-round ratio beside it. The load average is printed before and after: if it is high or
the rounds disagree, run again on a quiet machine.

Plugin discovery and the first use of lazily imported modules happen once per process,
before timing (a warm-up featurize of one file).

Run from the repository root:

    python benchmarks/featurize.py                       # the four shared folders
    python benchmarks/featurize.py --files 0 --rounds 3  # every file of every folder
    python benchmarks/featurize.py path/to/folder ...    # other structures, one row each
    python benchmarks/featurize.py --baseline REV        # (c) before/after: REV against this tree

With ``--baseline REV`` only (c) is measured, as the commit ``REV`` computes it (``git archive``
unpacked into a temporary folder, its ``core/`` and ``plugins/`` first on ``PYTHONPATH``) and as
this tree does, each side a child process that runs (c) once untimed and ``--child-runs``
times timed over each folder, the sides taking turns for ``--rounds`` rounds: a change's gain
on (c) measured without (a), whose minutes dwarf it.

It prints one Markdown table per folder and a summary of (a)/(c) per folder; ``--json FILE``
also writes the numbers.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ROOT.parent / "shared" / "data" / "structures"
FOLDERS = ("masif", "db55_unbound", "mdanalysis", "biopython")
METHODS = {
    "a": "(a) authors' algorithm: Bio.PDB, O(L^2) Python loop, IC angles",
    "b": "(b) Bio.PDB parse alone",
    "c": "(c) ours, cold cache, 1 worker",
    "d": "(d) ours, warm cache",
    "e": "(e) ours with the Bio.PDB reader, cold, 1 worker",
}


def pick_files(folder: Path, count: int) -> list[Path]:
    """``count`` files spread evenly over the folder's sorted files (all when ``count`` is 0
    or at least their number)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if count <= 0 or count >= len(files):
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


def per_file(files: list[Path], work: Callable[[Path], object]) -> tuple[Clock, int]:
    ok = 0
    with Clock() as clock:
        for path in files:
            try:
                work(path)
                ok += 1
            except Exception:  # a file this method cannot read still costs its time
                pass
    return clock, ok


def _failed(report) -> int:
    ok_sources = {row["source"] for row in report.ok}
    return len({row["source"] for row in report.failed} - ok_sources)


def measure(files: list[Path], key: str) -> tuple[Clock, int]:
    """One method over the files: its clock and how many files it read. The garbage of the
    methods run before is collected first, outside any clock: Bio.PDB's structures are
    reference cycles, and a few dozen files of (a) leave some 150,000 objects that Python's
    collector would otherwise free in the middle of whichever method runs next (0.2-0.3 s,
    more than half of a (c) run over a folder)."""
    from protsteps.featurize import featurize_many

    gc.collect()
    if key == "a":
        with tempfile.TemporaryDirectory() as out:
            return per_file(files, lambda path: authors_graph(path, Path(out)))
    if key == "b":
        return per_file(files, bio_structure)
    reader = "biopython" if key == "e" else "columnar"
    with tempfile.TemporaryDirectory() as cache:
        if key == "d":
            featurize_many(files, cache_dir=cache, workers=1)
        with Clock() as clock:
            report = featurize_many(files, cache_dir=cache, workers=1, reader=reader)
        if key == "d":
            assert report.cache_hits == len(files)
    return clock, len(files) - _failed(report)


def run_folder(files: list[Path], rounds: int, slices: int) -> dict[str, list[tuple[float, float, int]]]:
    """Per method, (CPU s, wall s, files read) of every round.

    (a) and (c) sample the same minutes of the machine: (a) runs over the folder in
    ``slices`` parts, and (c) over the whole folder once beside each part (after it in even
    rounds, before it in odd ones); a round's (c) is the mean of those runs. (c) takes a
    fraction of a second a folder: timed once, it would weigh whatever the shared machine did
    in that fraction of a second against the minute (a) averages over."""
    times: dict[str, list[tuple[float, float, int]]] = {key: [] for key in METHODS}
    parts = [list(part) for part in np.array_split(np.array(files, dtype=object), slices) if len(part)]
    for number in range(rounds):
        totals = {"a": [0.0, 0.0, 0], "c": [0.0, 0.0, 0]}
        for part in parts:
            for key, group in (("a", part), ("c", files))[:: 1 if number % 2 == 0 else -1]:
                clock, ok = measure(group, key)
                total = totals[key]
                total[0] += clock.cpu
                total[1] += clock.wall
                total[2] = total[2] + ok if key == "a" else ok
        runs = len(parts)
        times["a"].append((totals["a"][0], totals["a"][1], int(totals["a"][2])))
        times["c"].append((totals["c"][0] / runs, totals["c"][1] / runs, int(totals["c"][2])))
        for key in ("b", "d", "e"):
            clock, ok = measure(files, key)
            times[key].append((clock.cpu, clock.wall, ok))
    return times


def residue_counts(files: list[Path]) -> tuple[int, int, int]:
    """(chains, median residues, longest chain) read by the columnar reader."""
    from protsteps.structure import read_chains

    lengths = []
    for path in files:
        try:
            lengths += [len(chain) for chain in read_chains(path)]
        except Exception:
            pass
    if not lengths:
        return 0, 0, 0
    return len(lengths), int(np.median(lengths)), max(lengths)


def cold_runs(folders: list[Path], count: int, runs: int) -> dict[str, list[float]]:
    """(c)'s CPU ms per file over each folder, ``runs`` times after one untimed run (a
    ``--baseline`` child: whichever protsteps is first on ``PYTHONPATH``)."""
    import protsteps

    protsteps.list_components()
    result = {}
    for folder in folders:
        files = pick_files(folder, count)
        measure(files, "c")
        result[folder.name] = [measure(files, "c")[0].cpu * 1000 / len(files) for _ in range(runs)]
    return result


def print_before_after(args: argparse.Namespace, folders: list[Path]) -> None:
    """(c) at ``args.baseline`` and in this tree, child processes taking turns."""
    # (imported here: the other benchmarks' helpers import torch, which (a) to (e) do without)
    from _workload import child_result, unpack_revision

    command = [sys.executable, __file__, "--child", "--files", str(args.files)]
    command += ["--child-runs", str(args.child_runs), *map(str, folders)]
    sides: dict[str, dict[str, list[float]]] = {args.baseline: {}, "this tree": {}}
    with tempfile.TemporaryDirectory() as tmp:
        environments = {
            args.baseline: {**os.environ, "PYTHONPATH": unpack_revision(args.baseline, tmp)},
            "this tree": dict(os.environ),
        }
        load_before = os.getloadavg()[0]
        for number in range(args.rounds):
            for side in list(sides)[:: 1 if number % 2 == 0 else -1]:
                for folder, times in child_result(command, environments[side], side).items():
                    sides[side].setdefault(folder, []).extend(times)
                print(f"round {number + 1}: {side} done", file=sys.stderr, flush=True)
    print(
        f"(c) before/after: {args.baseline} against this tree, {args.rounds} rounds of a child process "
        f"per side ({args.child_runs} timed runs each, after one untimed), in alternating order; "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print(f"| folder | runs | (c) at {args.baseline}, CPU ms/file | (c) now | now / before |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for folder in sides["this tree"]:
        before = statistics.median(sides[args.baseline][folder])
        now = statistics.median(sides["this tree"][folder])
        runs = len(sides["this tree"][folder])
        print(f"| {folder} | {runs} | {before:.2f} | {now:.2f} | {now / before:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "folders",
        nargs="*",
        type=Path,
        help="folders of structures (default: the four shared folders)",
    )
    parser.add_argument(
        "--files", type=int, default=80, help="files per folder, spread evenly (default 80; 0: all)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per folder (default 2)")
    parser.add_argument(
        "--slices",
        type=int,
        default=5,
        help="parts (a) runs in per round, with one run of (c) beside each (default 5)",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--baseline", metavar="REV", help="(c) only: this git revision against this tree")
    parser.add_argument(
        "--child-runs", type=int, default=3, help="timed (c) runs per child process (--baseline; default 3)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folders = args.folders or [STRUCTURES / name for name in FOLDERS]
    if args.child:
        print(json.dumps(cold_runs(folders, args.files, args.child_runs)))
        return
    if args.baseline:
        print_before_after(args, folders)
        return

    import protsteps
    from protsteps.featurize import featurize_many

    with Clock() as startup:
        protsteps.list_components()  # plugin discovery: once per process, not per structure
        with tempfile.TemporaryDirectory() as cache:  # lazily imported modules, once
            featurize_many(pick_files(folders[0], 1), cache_dir=cache, workers=1)
    load_before = os.getloadavg()
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}; load average before {load_before[0]:.2f} (1 min), "
        f"{load_before[1]:.2f} (5 min); start-up (plugin discovery, first imports; "
        f"excluded) {startup.wall:.2f} s; {args.rounds} rounds of {args.slices} slices\n"
    )
    summary = []
    for folder in folders:
        files = pick_files(folder, args.files)
        times = run_folder(files, args.rounds, max(1, args.slices))
        chains, median, longest = residue_counts(files)
        cpu = {key: sum(t[0] for t in rows) for key, rows in times.items()}
        wall = {key: sum(t[1] for t in rows) for key, rows in times.items()}
        per_round = [a[0] / max(c[0], 1e-9) for a, c in zip(times["a"], times["c"], strict=True)]
        print(
            f"### {folder.name}: {len(files)} files, {chains} chains (median {median} residues, "
            f"longest {longest})\n"
        )
        print("| method | files read | CPU ms/file | wall ms/file | vs (a), CPU | vs (a), wall |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        rows = []
        for key, label in METHODS.items():
            runs = len(times[key])
            cpu_ms = 1000 * cpu[key] / (runs * len(files))
            wall_ms = 1000 * wall[key] / (runs * len(files))
            vs_cpu, vs_wall = cpu["a"] / max(cpu[key], 1e-9), wall["a"] / max(wall[key], 1e-9)
            print(
                f"| {label} | {times[key][-1][2]} | {cpu_ms:.2f} | {wall_ms:.2f} | "
                f"{vs_cpu:.0f}x | {vs_wall:.0f}x |"
            )
            rows.append(
                {
                    "method": label,
                    "files_read": times[key][-1][2],
                    "cpu_seconds": [t[0] for t in times[key]],
                    "wall_seconds": [t[1] for t in times[key]],
                    "speedup_cpu": vs_cpu,
                    "speedup_wall": vs_wall,
                }
            )
        ratio = cpu["a"] / max(cpu["c"], 1e-9)
        print(f"\n(a)/(c), CPU: {ratio:.0f}x (single rounds {min(per_round):.0f}x-{max(per_round):.0f}x)\n")
        summary.append(
            {
                "folder": str(folder),
                "files": len(files),
                "chains": chains,
                "median_residues": median,
                "ratio_cpu": ratio,
                "ratio_cpu_rounds": per_round,
                "methods": rows,
            }
        )
    load_after = os.getloadavg()
    print("| folder | files | (a) CPU ms/file | (c) CPU ms/file | (a)/(c), CPU | single rounds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for entry in summary:
        a_cpu = entry["methods"][0]["cpu_seconds"]
        c_cpu = entry["methods"][2]["cpu_seconds"]
        scale = 1000 / (len(a_cpu) * entry["files"])
        print(
            f"| {Path(entry['folder']).name} | {entry['files']} | {sum(a_cpu) * scale:.1f} | "
            f"{sum(c_cpu) * scale:.2f} | {entry['ratio_cpu']:.0f}x | "
            f"{min(entry['ratio_cpu_rounds']):.0f}-{max(entry['ratio_cpu_rounds']):.0f}x |"
        )
    print(f"\nload average after {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "load_before": load_before,
                    "load_after": load_after,
                    "folders": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
