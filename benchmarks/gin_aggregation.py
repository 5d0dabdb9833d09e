"""gin's neighbour sum: the sparse-matrix product against gather-scatter, and the default
pretraining step's fraction of this machine's matmul peak.

The default step: ``protsteps pretrain`` with every setting at its default and no teacher
(``gin`` with hidden width 256, the ``distance`` and ``dihedral`` tasks, the joint scheme),
on batches of 8 real chains of 50-400 residues from ``../shared/data/structures/masif``.
gin sums each residue's neighbours, :math:`\\sum_j w_{ij} h_j`, either as the product of
the node states with the sparse weighted adjacency matrix (``sparse``, compressed rows,
:class:`protsteps.scatter.WeightedAdjacency`, the default) or by gathering ``h[source]``,
scaling and summing into the targets with ``index_add_`` (``scatter``, the path before).
The two take turns epoch by epoch on the same batches, each with its own model built from
the same seed, after one untimed epoch each.

Reported, from this process's CPU time (``time.process_time``; steadier than wall time on a
shared machine): proteins per CPU-second of each path; the FLOPs of one step (forward,
backward, optimiser) as ``torch.utils.flop_counter.FlopCounterMode`` counts them (matrix
products: the neighbour sums are not counted on either path, so the count is the same for
both); and the fraction of the matmul peak this gives, the peak being the best rate of a
one-thread 1,024 x 1,024 float32 matrix product measured in the same run. A second table
times the neighbour sum alone (forward and backward) at the widths the step uses, for both
paths and a third candidate, a segment sum over edges sorted by target
(``torch.segment_reduce``).

With ``--baseline REV`` it first measures the default step before/after: as the commit
``REV`` computes it, with gather-scatter neighbour sums and with its default ones, and as
this working tree does, with freed memory kept for reuse as ``protsteps pretrain`` keeps it
(:mod:`protsteps.allocator`) and with glibc's own allocator (``PROTSTEPS_MALLOC=system``;
a revision from before that module runs this way). ``git archive REV`` is unpacked into a
temporary folder; each side runs in a child process of its own (the baseline's ``core/``
and ``plugins/`` first on ``PYTHONPATH``), all on the same batches and seeds, one untimed
epoch then ``--epochs`` timed ones, ``--rounds`` times in rotating order.

    python benchmarks/gin_aggregation.py
    python benchmarks/gin_aggregation.py --baseline c5f1e7f --rounds 4   # before/after
    python benchmarks/gin_aggregation.py --quick     # a smoke run: 8 chains, 1 timed epoch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _workload import (
    DEFAULT_STRUCTURES,
    child_result,
    composed_for_training,
    keep_freed_memory_if_present,
    real_chains,
    unpack_revision,
)
from torch.utils.flop_counter import FlopCounterMode

import protsteps
from protsteps.graph import Batch
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config

PATHS = ("scatter", "sparse")


def build(total_steps: int):
    catalog = default_catalog()
    config = load_run_config(None, catalog, components={"teacher": "none"})
    return composed_for_training(config, catalog, total_steps)


def run_epoch(composition, batches: list[Batch], path: str, seed: int) -> list[float]:
    """CPU seconds of each step of one epoch with ``path`` summing the neighbours."""
    os.environ["PROTSTEPS_AGGREGATION"] = path
    times = []
    for index, batch in enumerate(batches):
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        start = time.process_time()
        composition.scheme.step(batch, generator)
        times.append(time.process_time() - start)
    return times


def step_flops(composition, batch: Batch) -> int:
    with FlopCounterMode(display=False) as counter:
        composition.scheme.step(batch, torch.Generator().manual_seed(0))
    return counter.get_total_flops()


def matmul_peak(size: int = 1024, seconds: float = 1.0) -> float:
    """Best FLOP/s of ``size x size`` float32 matrix products, in CPU time, on one thread."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    best = 0.0
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        start = time.process_time()
        for _ in range(4):
            torch.mm(a, b, out=out)
        elapsed = time.process_time() - start
        if elapsed > 0:
            best = max(best, 4 * 2 * size**3 / elapsed)
    return best


def cpu_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        samples.append(time.process_time() - start)
    return statistics.median(samples) * 1000


def aggregation_rows(batch: Batch, widths: list[int], repeats: int) -> list[tuple[int, dict[str, float]]]:
    """Forward + backward of the neighbour sum alone, per width, per candidate (ms CPU)."""
    from protsteps.scatter import WeightedAdjacency  # not in a --baseline before it

    weight = 1.0 / (batch.edge_distance.float().square() + 1e-6)
    source, target = batch.edge_index
    # the segment sum needs edges sorted by target; residue_graph writes them so
    assert bool((target[1:] >= target[:-1]).all())
    lengths = torch.bincount(target, minlength=batch.num_nodes)

    def segment_sum(h: torch.Tensor) -> torch.Tensor:
        return torch.segment_reduce(weight[:, None] * h[source], "sum", lengths=lengths, axis=0, unsafe=True)

    rows = []
    for width in widths:
        h = torch.randn(batch.num_nodes, width, requires_grad=True)
        upstream = torch.randn(batch.num_nodes, width)
        candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "scatter": lambda x: WeightedAdjacency(batch.edge_index, weight, batch.num_nodes, "scatter") @ x,
            "sparse": lambda x: WeightedAdjacency(batch.edge_index, weight, batch.num_nodes, "sparse") @ x,
            "segment": segment_sum,
        }
        reference = candidates["scatter"](h)
        timings = {}
        for name, apply in candidates.items():
            torch.testing.assert_close(apply(h), reference, rtol=1e-4, atol=1e-4)

            def forward_backward(
                apply: Callable[[torch.Tensor], torch.Tensor] = apply,
                h: torch.Tensor = h,
                upstream: torch.Tensor = upstream,
            ) -> None:
                h.grad = None
                apply(h).backward(upstream)

            timings[name] = cpu_ms(forward_backward, repeats)
        rows.append((width, timings))
    return rows


def default_step_times(args: argparse.Namespace) -> list[float]:
    """CPU seconds of each timed step of the default step without a teacher, built through
    only what every version of protsteps has (a child process: ``--child``)."""
    from protsteps.model import compose
    from protsteps.optim import SchemeSetup

    keep_freed_memory_if_present()
    torch.set_num_threads(1)
    graphs = real_chains(args.structures, args.proteins, 50, 400)
    batches = [
        protsteps.collate(graphs[i : i + args.batch_size]) for i in range(0, len(graphs), args.batch_size)
    ]
    catalog = default_catalog()
    config = load_run_config(None, catalog, components={"teacher": "none"})
    torch.manual_seed(0)
    composition = compose(config, catalog)
    total = len(batches) * (args.epochs + 1)
    composition.scheme.setup(
        SchemeSetup(
            model=composition.model, train=config.train, total_steps=total, device=torch.device("cpu")
        )
    )
    composition.model.train()
    times: list[float] = []
    for epoch in range(args.epochs + 1):
        for index, batch in enumerate(batches):
            generator = torch.Generator().manual_seed(epoch * 1000 + index)
            start = time.process_time()
            composition.scheme.step(batch, generator)
            if epoch > 0:  # the first epoch is untimed: allocator warm-up
                times.append(time.process_time() - start)
    return times


def before_after(args: argparse.Namespace) -> dict[str, list[float]]:
    """Step times of ``args.baseline`` (a git revision) with gather-scatter neighbour sums
    (``PROTSTEPS_AGGREGATION=scatter``) and with its default ones, and of this working tree, in
    child processes taking turns."""
    sides: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = {"PYTHONPATH": unpack_revision(args.baseline, tmp)}
        environments = {
            f"{args.baseline}, gather-scatter": {**baseline, "PROTSTEPS_AGGREGATION": "scatter"},
            f"{args.baseline}": {**baseline, "PROTSTEPS_AGGREGATION": "sparse"},
            "this tree, glibc's own allocator": {
                "PROTSTEPS_AGGREGATION": "sparse",
                "PROTSTEPS_MALLOC": "system",
            },
            "this tree": {"PROTSTEPS_AGGREGATION": "sparse"},
        }
        command = [sys.executable, __file__, "--child", "--structures", str(args.structures)]
        command += ["--proteins", str(args.proteins), "--batch-size", str(args.batch_size)]
        command += ["--epochs", str(args.epochs)]
        names = list(environments)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for side in names[shift:] + names[:shift]:
                env = {**os.environ, **environments[side]}
                sides.setdefault(side, []).extend(child_result(command, env, side))
                print(f"round {round_index + 1}: {side} done", file=sys.stderr, flush=True)
    return {name: sides[name] for name in names}


def print_before_after(args: argparse.Namespace) -> None:
    sides = before_after(args)
    print(
        f"Before/after: the default step without a teacher at {args.baseline} (its gather-scatter "
        f"and its sparse neighbour sum) and in this tree, {args.proteins} chains in batches of "
        f"{args.batch_size}; {args.rounds} rounds of {args.epochs} timed epochs per side, each "
        f"side a child process, in rotating order; load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| code | steps | median CPU per step (ms) | proteins per CPU-second | vs first row |")
    print("| --- | ---: | ---: | ---: | ---: |")
    first = next(iter(sides.values()))
    base = args.batch_size * len(first) / sum(first)
    for side, times in sides.items():
        rate = args.batch_size * len(times) / sum(times)
        print(
            f"| {side} | {len(times)} | {statistics.median(times) * 1000:.1f} | {rate:.1f} | {rate / base:.2f}x |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--structures", default=DEFAULT_STRUCTURES, help="folder of structure files")
    parser.add_argument("--proteins", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per path")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 chains, 1 timed epoch")
    parser.add_argument(
        "--baseline", help="a git revision: also time the default step there against this tree"
    )
    parser.add_argument("--rounds", type=int, default=4, help="before/after rounds per side (--baseline)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.proteins, args.epochs, args.rounds = 8, 1, 1
    args.structures = Path(args.structures)
    if args.child:
        print(json.dumps(default_step_times(args)))
        return
    if args.baseline:
        print_before_after(args)
        print()
    keep_freed_memory_if_present()
    torch.set_num_threads(1)
    saved = os.environ.get("PROTSTEPS_AGGREGATION")

    graphs = real_chains(args.structures, args.proteins, 50, 400)
    batches = [
        protsteps.collate(graphs[i : i + args.batch_size]) for i in range(0, len(graphs), args.batch_size)
    ]
    runs = {path: build(len(batches) * (args.epochs + 1)) for path in PATHS}
    for path in PATHS:  # untimed: allocator warm-up
        run_epoch(runs[path], batches, path, seed=0)
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    for epoch in range(args.epochs):
        for path in PATHS if epoch % 2 == 0 else PATHS[::-1]:
            times[path].extend(run_epoch(runs[path], batches, path, seed=epoch + 1))
    os.environ["PROTSTEPS_AGGREGATION"] = "scatter"
    flops = statistics.median(step_flops(build(1), batch) for batch in batches)
    peak = max(matmul_peak() for _ in range(3))
    encoder = runs["sparse"].model.encoder
    widths = sorted({layer.linear.in_features for layer in encoder.layers} | {encoder.out_dim})
    micro = aggregation_rows(batches[0], widths, repeats=5 if args.quick else 20)
    if saved is None:
        os.environ.pop("PROTSTEPS_AGGREGATION", None)
    else:
        os.environ["PROTSTEPS_AGGREGATION"] = saved

    residues = sum(g.num_nodes for g in graphs)
    edges = sum(g.num_edges for g in graphs)
    load = os.getloadavg()[0]
    print(
        f"{len(graphs)} real chains ({residues} residues, {edges} edges), {len(batches)} batches of "
        f"{args.batch_size}; default step without a teacher; {args.epochs} timed epochs per path, "
        f"interleaved; torch {torch.__version__}, 1 thread; load average {load:.1f}"
    )
    print(
        f"FLOPs per step (FlopCounterMode, median over batches): {flops / 1e9:.3f} GFLOP; "
        f"one-thread matmul peak: {peak / 1e9:.1f} GFLOP/s"
    )
    print()
    print(
        "| neighbour sum | steps | median CPU per step (ms) | proteins per CPU-second | vs scatter | fraction of matmul peak |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = args.batch_size * len(times["scatter"]) / sum(times["scatter"])
    for path in PATHS:
        rate = args.batch_size * len(times[path]) / sum(times[path])
        step = sum(times[path]) / len(times[path])
        print(
            f"| {path} | {len(times[path])} | {statistics.median(times[path]) * 1000:.1f} | {rate:.1f} "
            f"| {rate / base:.2f}x | {flops / step / peak:.0%} |"
        )
    print()
    print(
        f"Neighbour sum alone, forward + backward, first batch ({batches[0].num_nodes} residues, "
        f"{batches[0].edge_index.shape[1]} edges), median CPU ms:"
    )
    print()
    print("| width | scatter (before) | sparse (now) | segment sum (sorted) | sparse vs scatter |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for width, timings in micro:
        print(
            f"| {width} | {timings['scatter']:.2f} | {timings['sparse']:.2f} | {timings['segment']:.2f} "
            f"| {timings['scatter'] / timings['sparse']:.1f}x |"
        )


if __name__ == "__main__":
    main()
