"""Page faults and time per training step with freed memory kept for reuse, and without.

:func:`protsteps.allocator.keep_freed_memory` (which the command line calls) asks glibc to
serve blocks up to 32 MiB from its heap and to keep freed memory for reuse; without it glibc
maps every large tensor fresh and unmaps it on free, so each step's tensors land on new pages.
This script runs a training step both ways, each in a child process of its own
(``PROTSTEPS_MALLOC=system`` for "system"), rounds taking turns:

- ``default``: ``protsteps pretrain``'s default step without a teacher (``gin`` of width 256,
  the ``distance`` and ``dihedral`` tasks, the joint scheme), batches of 8 real chains of
  50-400 residues;
- ``steps``: the default step with the ``esm`` teacher and the pseudo bi-level scheme, trunk
  cache on (steady state: the first epoch, which fills it, is untimed), a random-weight
  ESM-2 of ``esm2_t6_8M_UR50D``'s architecture in fair-esm's format.

Per step, from ``getrusage`` of the child over the timed epochs: user and system CPU
milliseconds and minor page faults. One thread.

    python benchmarks/allocator.py                    # both steps, 3 rounds
    python benchmarks/allocator.py --steps default --rounds 5
    python benchmarks/allocator.py --quick            # a smoke run
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from _workload import answered_as_child, chains_parser, child_result, composed_for_training, real_chains

import protsteps
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config

MODES = ("kept", "system")
STEPS = ("default", "steps")


def child(args: argparse.Namespace) -> dict[str, float | str]:
    from protsteps.allocator import keep_freed_memory

    said = keep_freed_memory()
    torch.set_num_threads(1)
    graphs = real_chains(args.structures, args.proteins, 50, 400)
    catalog = default_catalog()
    if args.child == "default":
        config = load_run_config(None, catalog, components={"teacher": "none"})
    else:
        config = load_run_config(
            None,
            catalog,
            components={"teacher": "esm", "scheme": "pseudo_bilevel"},
            sets=[f'teacher.weights="{args.weights}"', "teacher.download=false", "teacher.cache=true"],
        )
    size = config.train.batch_size
    batches = [protsteps.collate(graphs[i : i + size]) for i in range(0, len(graphs), size)]
    composition = composed_for_training(config, catalog, 100_000, one_epoch=True)

    def epoch(seed: int) -> None:
        for index, batch in enumerate(batches):
            composition.scheme.step(batch, torch.Generator().manual_seed(seed * 1000 + index))

    epoch(0)  # untimed: the allocator's warm-up and, with a teacher, the trunk cache's fill
    before = resource.getrusage(resource.RUSAGE_SELF)
    for number in range(args.epochs):
        epoch(number + 1)
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps = args.epochs * len(batches)
    return {
        "allocator": said,
        "user_ms": 1000 * (after.ru_utime - before.ru_utime) / steps,
        "system_ms": 1000 * (after.ru_stime - before.ru_stime) / steps,
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
    }


def run_child(step: str, mode: str, args: argparse.Namespace, weights: Path) -> dict[str, float | str]:
    env = dict(os.environ)
    env.pop("PROTSTEPS_MALLOC", None)
    if mode == "system":
        env["PROTSTEPS_MALLOC"] = "system"
    command = [sys.executable, __file__, "--child", step, "--weights", str(weights)]
    command += ["--structures", str(args.structures), "--proteins", str(args.proteins)]
    command += ["--epochs", str(args.epochs)]
    return child_result(command, env, f"{step}, {mode}: the child")


def main(argv: list[str] | None = None) -> None:
    parser = chains_parser(__doc__, 40, "real chains (batches of 8)", STEPS)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per child")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over steps and modes")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 chains, 1 epoch, 1 round")
    args = parser.parse_args(argv)
    if answered_as_child(args, child):
        return
    if args.quick:
        args.proteins, args.epochs, args.rounds = 8, 1, 1
    from protsteps_esm.testing import write_esm2_checkpoint

    rows: dict[tuple[str, str], list[dict[str, float | str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_esm2_checkpoint(
            Path(tmp) / "esm2_t6_320_random.pt", num_layers=6, embed_dim=320, attention_heads=20
        )
        pairs = [(step, mode) for step in args.steps for mode in MODES]
        for number in range(args.rounds):
            order = pairs if number % 2 == 0 else [(s, m) for s, m in pairs[::-1]]
            for step, mode in order:
                rows.setdefault((step, mode), []).append(run_child(step, mode, args, weights))
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, 1 thread, {args.proteins} chains, {args.epochs} timed epochs per "
        f"child, {args.rounds} rounds; load average after {load:.2f}\n"
    )
    print(
        "| step | allocator | user ms | system ms | user + system ms | minor faults | per round (user + system) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for (step, mode), results in rows.items():
        total = [float(r["user_ms"]) + float(r["system_ms"]) for r in results]
        print(
            f"| {step} | {mode} | {statistics.median(float(r['user_ms']) for r in results):.1f} "
            f"| {statistics.median(float(r['system_ms']) for r in results):.2f} "
            f"| {statistics.median(total):.1f} "
            f"| {statistics.median(float(r['faults']) for r in results):.0f} "
            f"| {', '.join(f'{t:.1f}' for t in total)} |"
        )
    print()
    for (step, mode), results in rows.items():
        print(f"{step}, {mode}: {results[0]['allocator']}")


if __name__ == "__main__":
    main()
