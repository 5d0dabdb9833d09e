"""How the torch thread count changes a pretrain's time: protsteps' automatic choice
(``--threads`` not given), one thread, and every core (torch's own default).

Each setting runs the same command, a 1-epoch ``protsteps pretrain`` on the MaSIF structures
(no teacher, every other setting at its default), in a fresh process; the settings take
turns, ``--repeats`` rounds. The featurize cache is filled once before timing (a temporary
folder), so every run times the same work: reading the cache and training. CPU seconds are
the child process's user + system time; the load average before each run says how busy the
machine was. ``--compete N`` runs N CPU-bound processes beside every timed run (a machine
that others share, reproducibly).

Run from the repository root:

    python benchmarks/threads.py
    python benchmarks/threads.py --compete 1

It prints a Markdown table (median wall and CPU seconds per setting); ``--json FILE`` also
writes every run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from protsteps.threads import choose_threads, physical_cores

ROOT = Path(__file__).resolve().parents[1]
MASIF = ROOT.parent / "shared" / "data" / "structures" / "masif"


def _spin(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def run_once(structures: Path, out: Path, cache: Path, threads: int | None, epochs: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "protsteps",
        "pretrain",
        str(structures),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--epochs",
        str(epochs),
        "--teacher",
        "none",
        "-q",
    ]
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    used = sorted({r["threads"] for r in records if r.get("split") == "train"})
    return {"wall": wall, "cpu": cpu, "load_before": load, "threads": used}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--structures", type=Path, default=MASIF)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compete", type=int, default=0, help="CPU-bound processes beside each run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cores, known = physical_cores()
    settings: list[tuple[str, int | None]] = [
        ("default (auto)", None),
        ("--threads 1", 1),
        (f"--threads {cores} (all cores; torch's default)", cores),
    ]
    results: dict[str, list[dict]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "protsteps",
                "featurize",
                str(args.structures),
                "--out",
                str(Path(tmp) / "f"),
                "--cache-dir",
                str(cache),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        context = multiprocessing.get_context("spawn")
        for round_ in range(args.repeats):
            for name, threads in settings:
                stop = context.Event()
                spinners = [context.Process(target=_spin, args=(stop,)) for _ in range(args.compete)]
                for spinner in spinners:
                    spinner.start()
                try:
                    out = Path(tmp) / f"run-{round_}-{threads}"
                    result = run_once(args.structures, out, cache, threads, args.epochs)
                finally:
                    stop.set()
                    for spinner in spinners:
                        spinner.join()
                results[name].append(result)
                print(
                    f"round {round_ + 1}: {name}: {result['wall']:.1f} s wall, {result['cpu']:.1f} s CPU, "
                    f"threads {result['threads']}, load before {result['load_before']:.1f}",
                    file=sys.stderr,
                    flush=True,
                )

    print(
        f"\ntorch {torch.__version__} CPU, {platform.machine()}, {cores} "
        f"{'physical cores' if known else 'CPUs'}, {args.compete} competing CPU-bound processes, "
        f"{args.epochs}-epoch pretrain on {args.structures.name} (no teacher), {args.repeats} rounds; "
        f"auto would choose now: {choose_threads(0).describe()}\n"
    )
    print("| threads | chosen | median wall (s) | median CPU (s) | runs: wall (s) | load average before |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for name, _ in settings:
        runs = results[name]
        chosen = ", ".join(sorted({str(t) for r in runs for t in r["threads"]}))
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
        loads = ", ".join(f"{r['load_before']:.1f}" for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        print(f"| {name} | {chosen} | {wall:.1f} | {cpu:.1f} | {walls} | {loads} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
