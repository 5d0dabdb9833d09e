"""Peak memory of ``embed --per-residue`` and of writing its file, per output format.

Per-residue embeddings are ``R x d`` float32 for ``R`` residues: 1 KB a residue at the
default width of 256, so 10 GB for ten million residues. How many such copies a run holds at
once decides the corpus it can embed on a given machine. This script measures it.

For each format (``.npz``, ``.h5``) a child process loads a small pretrained encoder and
embeds the structures once without per-residue output. That fills the featurize cache and
imports everything. The child then resets the kernel's peak-RSS counter (``echo 5 >
/proc/self/clear_refs``), reads its resident set size, runs ``embed(..., per_residue=True)``
and ``Embeddings.save`` to the format, and reads the peak (``VmHWM``). Reported: the peak
above the start, and that peak in units of the per-residue array itself (``R x d x 4``
bytes).

With ``--baseline REV`` the same children also run as the commit ``REV`` computes them
(``git archive`` unpacked, its ``core/`` and ``plugins/`` first on ``PYTHONPATH``), on the
same encoder and structures.

    python benchmarks/embed_memory.py                      # 120 MaSIF files, npz and h5
    python benchmarks/embed_memory.py --baseline 3e988bb   # before/after
    python benchmarks/embed_memory.py --quick              # smoke run: 8 files
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _workload import (
    DEFAULT_STRUCTURES,
    answered_as_child,
    child_result,
    proc_status_bytes,
    reset_peak_rss,
    unpack_revision,
)

#: each with the package its writer needs (h5py, pyarrow), run when that is installed
FORMATS = {"npz": "numpy", "h5": "h5py", "parquet": "pyarrow"}


def child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from protsteps.downstream import embed, load_embeddings

    files = [str(p) for p in sorted(Path(args.structures).iterdir()) if p.is_file()][: args.files]
    embed(files, args.encoder, cache_dir=args.cache)  # fills the featurize cache, imports all
    reset_peak_rss()
    before = proc_status_bytes("VmRSS")
    out = embed(files, args.encoder, per_residue=True, cache_dir=args.cache)
    start = time.process_time()
    out.save(Path(args.out))
    write = time.process_time() - start
    peak = proc_status_bytes("VmHWM") - before
    start = time.process_time()
    back = load_embeddings(Path(args.out)) if not args.out.endswith(".h5") else None
    read = time.process_time() - start
    if back is not None and not np.array_equal(back.residue_embeddings, out.residue_embeddings):
        raise SystemExit(f"{args.out} does not read back the per-residue embeddings it was given")
    residues = int(out.residues.sum())
    dim = int(out.embeddings.shape[1])
    return {
        "peak": peak,
        "residues": residues,
        "dim": dim,
        "chains": len(out),
        "bytes": residues * dim * 4,
        "write": write,
        "read": read if back is not None else None,
    }


def run_child(args: argparse.Namespace, fmt: str, encoder: Path, tmp: Path, python_path: str | None) -> dict:
    env = dict(os.environ)
    if python_path:
        env["PYTHONPATH"] = python_path + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        sys.executable,
        __file__,
        "--child",
        "--structures",
        str(args.structures),
        "--files",
        str(args.files),
        "--encoder",
        str(encoder),
        "--cache",
        str(tmp / "cache"),
        "--out",
        str(tmp / f"out.{fmt}"),
    ]
    return child_result(
        command, env, f"the .{fmt} child ({'this tree' if python_path is None else 'baseline'})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--structures", type=Path, default=DEFAULT_STRUCTURES, help="folder of structure files"
    )
    parser.add_argument("--files", type=int, default=120, help="structure files (sorted names)")
    parser.add_argument("--baseline", help="a git revision: also run the children as it computes them")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 files")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if answered_as_child(args, child):
        return
    if args.quick:
        args.files = 8
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        # a small pretrained encoder (defaults, one epoch on the bundled structures)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "protsteps",
                "pretrain",
                "--out",
                str(tmp / "run"),
                "--set",
                "train.epochs=1",
            ],
            check=True,
            capture_output=True,
        )
        encoder = tmp / "run" / "encoder.pt"
        sides: list[tuple[str, str | None]] = [("this tree", None)]
        if args.baseline:
            sides.insert(0, (args.baseline, unpack_revision(args.baseline, str(tmp / "baseline"))))
        rows = []
        for code, python_path in sides:
            for fmt in [f for f, package in FORMATS.items() if importlib.util.find_spec(package)]:
                result = run_child(args, fmt, encoder, tmp, python_path)
                rows.append((code, fmt, result))
                print(f"{code}, .{fmt}: peak {result['peak'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    first = rows[0][2]
    print(
        f"{first['chains']} chains ({first['residues']} residues, width {first['dim']}) from {args.files} "
        f"files of {args.structures}; the per-residue array is {first['bytes'] / 2**20:.0f} MiB"
    )
    print()
    print(
        "| code | format | peak above start (MiB) | in per-residue arrays | write (CPU s) | read back (CPU s) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for code, fmt, result in rows:
        read = "-" if result["read"] is None else f"{result['read']:.2f}"
        print(
            f"| {code} | .{fmt} | {result['peak'] / 2**20:.0f} | {result['peak'] / result['bytes']:.1f}x "
            f"| {result['write']:.2f} | {read} |"
        )


if __name__ == "__main__":
    main()
