"""Benchmark: one teacher training step with and without the frozen-trunk cache.

A step is what training does with the teacher: embed a batch of real sequences, take a loss
on the embeddings and backpropagate into the trainable tail. Without the cache every step
runs the whole model (the frozen trunk under ``no_grad``, then the tail); with it the trunk's
output is read back per sequence and only the tail runs. The model has the architecture of
``esm2_t6_8M_UR50D`` (6 layers, dim 320, 20 heads) with random weights, written to a local
file in fair-esm's format and loaded through the same path as real weights (the speed does
not depend on the weights' values).

Epochs of the two paths are interleaved so that load from other processes hits both alike;
the cached teacher's first epoch (which fills the cache) is reported on its own.

    python benchmarks/teacher.py                  # defaults used for docs/benchmarks.md
    python benchmarks/teacher.py --proteins 64 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _workload import add_workload_arguments, esm2_weights, real_chains, timed

import protsteps
from protsteps_esm import ESMTeacher


def teacher_step(teacher: ESMTeacher, sequences: list[str]) -> None:
    """Forward, a loss on the embeddings, backward into the tail (as a training step)."""
    teacher.zero_grad(set_to_none=True)
    teacher(sequences).square().mean().backward()


def look_ahead_step(teacher: ESMTeacher, sequences: list[str]) -> None:
    """The teacher's share of a pseudo bi-level step: an inner loss, theta' = theta - alpha
    grad (create_graph), a second forward with theta' and a backward through both."""
    teacher.zero_grad(set_to_none=True)
    theta = teacher.tail_parameters()
    features = teacher(sequences)
    inner = features.mean(0).square().sum()
    grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
    updated = {name: p - 1e-3 * g for (name, p), g in zip(theta.items(), grads, strict=True)}
    teacher(sequences, tail=updated).square().mean().backward()


def features_step(teacher: ESMTeacher, sequences: list[str]) -> None:
    """The teacher's share of a joint-scheme step: features for the encoder, no gradients."""
    with torch.no_grad():
        teacher(sequences)


STEPS = {"train": teacher_step, "look-ahead": look_ahead_step, "features": features_step}
DESCRIPTIONS = {
    "features": "forward without gradients (the joint scheme's teacher work)",
    "train": "forward + backward into the tail",
    "look-ahead": "forward, differentiable inner step on the tail, forward with theta', backward through both",
}


def timed_epoch(step: Callable[[list[str]], None], batches: list[list[str]]) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each step. CPU time of this process is the steadier measure on a
    machine shared with other work; wall time is what a user waits."""
    times = []
    for batch in batches:
        times.append(timed(lambda: step(batch)))  # noqa: B023
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workload_arguments(parser)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per path (after the first)")
    parser.add_argument("--trainable-layers", type=int, default=1)
    parser.add_argument(
        "--step",
        choices=sorted(STEPS),
        default="train",
        help="train: forward + backward into the tail; look-ahead: the pseudo bi-level inner step too; "
        "features: forward without gradients, as the joint scheme uses the teacher",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    step = STEPS[args.step]
    graphs = real_chains(args.structures, args.proteins, args.min_length, args.max_length)
    sequences = [g.sequence for g in graphs]
    batches = [sequences[i : i + args.batch_size] for i in range(0, len(sequences), args.batch_size)]

    with tempfile.TemporaryDirectory() as tmp:
        weights = esm2_weights(Path(tmp), args)
        settings = {"weights": str(weights), "trainable_layers": args.trainable_layers}
        plain: ESMTeacher = protsteps.build("teacher", "esm", cache=False, **settings)
        cached: ESMTeacher = protsteps.build("teacher", "esm", cache=True, **settings)
        plain.train()
        cached.train()

        # untimed: warm the allocator, check both paths agree, then start from an empty cache
        step(plain, batches[0][:1])
        with torch.no_grad():
            difference = (plain(sequences) - cached(sequences)).abs().max().item()
        stats = cached.cache
        assert stats is not None
        stats.clear()
        hits, misses = stats.hits, stats.misses

        first = timed_epoch(lambda b: step(cached, b), batches)
        without: list[tuple[float, float]] = []
        with_cache: list[tuple[float, float]] = []
        for _ in range(args.epochs):
            without += timed_epoch(lambda b: step(plain, b), batches)
            with_cache += timed_epoch(lambda b: step(cached, b), batches)

    base_wall = statistics.median(w for w, _ in without)
    base_cpu = statistics.median(c for _, c in without)
    rows = [
        ("no cache: trunk + tail every step", without),
        ("cache, first epoch (fills it)", first),
        ("cache, later epochs: tail only", with_cache),
    ]
    residues = sum(map(len, sequences))
    print(
        f"teacher step '{args.step}' ({DESCRIPTIONS[args.step]}), ESM-2 {args.layers} layers / dim {args.dim} / "
        f"{args.heads} heads, tail k={args.trainable_layers}; {len(sequences)} real chains "
        f"({residues} residues, {min(map(len, sequences))}-{max(map(len, sequences))} long) from "
        f"{args.structures.name}/, batches of {args.batch_size}; torch {torch.__version__}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}"
    )
    print()
    print("| path | steps | median wall (ms) | median CPU (ms) | speed-up, wall | speed-up, CPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, times in rows:
        wall = statistics.median(w for w, _ in times)
        cpu = statistics.median(c for _, c in times)
        print(
            f"| {label} | {len(times)} | {1000 * wall:.0f} | {1000 * cpu:.0f} "
            f"| {base_wall / wall:.2f}x | {base_cpu / cpu:.2f}x |"
        )
    print()
    print(
        f"cache: {len(stats)} entries, {stats.nbytes / 2**20:.1f} MiB; during the timed epochs "
        f"{stats.hits - hits} hits, {stats.misses - misses} misses; max |cached - uncached| embedding difference {difference:.2e}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
