"""Step time of the pseudo bi-level scheme against the joint scheme, on the same batches.

Both schemes train the default student (GIN, distance and dihedral tasks) with an ESM-2
teacher of the ``esm2_t6_8M_UR50D`` architecture (6 layers, dim 320, 20 heads; random
weights written in fair-esm's format to a local file and loaded through the real loading
path: speed does not depend on the weights' values), with and without the teacher's
frozen-trunk cache. Data: real chains of 50-400 residues from
``../shared/data/structures/masif`` featurized with ``residue_graph``, batches of 8 proteins.

Each configuration runs one untimed epoch (which also fills the trunk cache), then the four
configurations take turns epoch by epoch so that load from other work on the machine hits
them alike. Reported: median wall and CPU time per step, and the ratio of pseudo bi-level to
joint with the same cache setting.

    python benchmarks/schemes.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from _workload import add_workload_arguments, composed_for_training, esm2_weights, real_chains, timed

import protsteps
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config


def build(scheme: str, weights: Path, cache: bool, total_steps: int):
    catalog = default_catalog()
    config = load_run_config(
        None,
        catalog,
        components={"teacher": "esm", "scheme": scheme},
        sets=[f'teacher.weights="{weights}"', f"teacher.cache={str(cache).lower()}"],
    )
    return composed_for_training(config, catalog, total_steps)


def timed_epoch(composition, batches, seed: int) -> list[tuple[float, float]]:
    times = []
    for index, batch in enumerate(batches):
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        times.append(timed(lambda: composition.scheme.step(batch, generator)))  # noqa: B023
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_workload_arguments(parser)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    graphs = real_chains(args.structures, args.proteins, args.min_length, args.max_length)
    batches = [
        protsteps.collate(graphs[i : i + args.batch_size]) for i in range(0, len(graphs), args.batch_size)
    ]
    residues = sum(g.num_nodes for g in graphs)
    configurations = [("joint", False), ("pseudo_bilevel", False), ("joint", True), ("pseudo_bilevel", True)]
    with tempfile.TemporaryDirectory() as tmp:
        weights = esm2_weights(Path(tmp), args)
        total = len(batches) * (args.epochs + 1)
        runs = {c: build(c[0], weights, c[1], total) for c in configurations}
        for c in configurations:  # untimed: allocator warm-up, cache filling
            timed_epoch(runs[c], batches, seed=0)
        times: dict[tuple[str, bool], list[tuple[float, float]]] = {c: [] for c in configurations}
        for epoch in range(args.epochs):
            for c in configurations:
                times[c].extend(timed_epoch(runs[c], batches, seed=epoch + 1))

    def medians(c: tuple[str, bool]) -> tuple[float, float]:
        return statistics.median(t[0] for t in times[c]), statistics.median(t[1] for t in times[c])

    print(
        f"{len(graphs)} real chains ({residues} residues), {len(batches)} batches of {args.batch_size}; "
        f"teacher: ESM-2 {args.layers} layers, dim {args.dim}, {args.heads} heads; "
        f"torch {torch.__version__}, {args.threads} thread(s)"
    )
    print()
    print(
        "| scheme | trunk cache | steps | median wall (ms) | median CPU (ms) | vs joint, wall | vs joint, CPU |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for c in configurations:
        wall, cpu = medians(c)
        joint_wall, joint_cpu = medians(("joint", c[1]))
        print(
            f"| {c[0]} | {'on' if c[1] else 'off'} | {len(times[c])} | {wall * 1000:.0f} | {cpu * 1000:.0f} "
            f"| {wall / joint_wall:.2f}x | {cpu / joint_cpu:.2f}x |"
        )


if __name__ == "__main__":
    main()
