"""Peak memory and step time of an encoder + the distance task, against chain length.

One training step (forward and backward of the encoder and the ``distance`` task) is run
on a single chain of L residues, once with the sampled-pairs task (``num_pairs`` per
protein, the default) and once with the released code's all-pairs formulation (every one of
the L^2 pairs through the head), where that fits in memory.

Chains: the six chains of a real receptor complex (Docking Benchmark 5.5,
``db55_unbound/4GAM_r_u.pdb.gz``, 2,128 residues) are joined in file order into one chain,
coordinates untouched, and cut to its first L residues; a break between two original chains
is a chain gap (its dihedrals are masked). The graph is the ``residue_graph`` featurizer's
(7 Å radius), so the number of edges per residue is that of a real, compact structure.

Memory is measured per step in a fresh subprocess (``--worker``), on the CPU: the worker
loads the graph and builds the model, resets the kernel's peak-RSS counter of its own
process (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), reads its resident set size,
runs one step and reads the peak (``VmHWM`` in ``/proc/self/status``). The difference is the
memory the step needed on top of the model and data. A fresh process matters: PyTorch's CPU
allocator hands memory back to the C library, and a previous step's freed pages could be
reused without showing in the peak. ``tracemalloc`` would not see tensor storage at all.
Step time is the median of ``--repeats`` further steps in the same worker.

The all-pairs memory is also computed analytically: the pair-feature tensor alone
(``L^2 x d`` floats) is a lower bound of what that formulation needs (its backward pass
needs a tensor of the same size again).

Usage::

    python benchmarks/memory.py                     # the table in docs/benchmarks.md
    python benchmarks/memory.py --lengths 250 500 --json memory.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _workload import proc_status_bytes, reset_peak_rss

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STRUCTURE = ROOT.parent / "shared" / "data" / "structures" / "db55_unbound" / "4GAM_r_u.pdb.gz"


# ---------------------------------------------------------------------------- chains


def joined_chain(path: Path, length: int) -> Any:
    """The chains of ``path`` joined in file order, cut to ``length`` residues."""
    from protsteps.structure import Chain, read_chains

    chains = read_chains(path)
    total = sum(len(c) for c in chains)
    if total < length:
        raise SystemExit(f"{path} has {total} residues in all, fewer than {length}")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(c, name) for c in chains])[:length]

    return Chain(
        source=str(path),
        chain_id="joined",
        sequence="".join(c.sequence for c in chains)[:length],
        residue_names=cat("residue_names"),
        residue_numbers=cat("residue_numbers"),
        insertion_codes=cat("insertion_codes"),
        backbone=cat("backbone"),
        backbone_mask=cat("backbone_mask"),
    )


# ---------------------------------------------------------------------------- the worker


@dataclasses.dataclass
class Settings:
    encoder: str
    encoder_config: dict[str, Any]
    teacher_dim: int | None
    num_pairs: int
    formulation: str  # "sampled" or "all_pairs"
    repeats: int
    threads: int


def all_pairs_loss(task: Any, node: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    r"""The released code's formulation: every ordered pair (diagonal included) through
    the head, ``e = (z_i - z_j)^2`` materialised as ``[L, L, d]``."""
    length, dim = node.shape
    from protsteps_tasks import distance_bins

    pairs = (node[None, :, :] - node[:, None, :]).square().reshape(length * length, dim)
    logits = task.head(pairs)
    distance = torch.cdist(pos, pos).reshape(-1)
    target = distance_bins(distance, task.config.num_bins, task.config.bin_width)
    return torch.nn.functional.cross_entropy(logits, target)


def worker(graph_file: Path, settings: Settings) -> dict[str, Any]:
    import protsteps
    from protsteps import BuildContext, ProteinGraph, collate

    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    graph = ProteinGraph.from_dict(torch.load(graph_file, weights_only=True))
    batch = collate([graph])
    encoder = protsteps.build(
        "encoder",
        settings.encoder,
        context=BuildContext(teacher_dim=settings.teacher_dim),
        **settings.encoder_config,
    )
    task_config: dict[str, Any] = {"num_pairs": settings.num_pairs}
    if settings.formulation == "all_pairs":
        task_config["pair_feature"] = "squared_difference"
    task = protsteps.build(
        "task", "distance", context=BuildContext(encoder_dim=encoder.out_dim), **task_config
    )
    teacher = torch.randn(batch.num_nodes, settings.teacher_dim) if settings.teacher_dim is not None else None
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        encoder.zero_grad(set_to_none=True)
        task.zero_grad(set_to_none=True)
        seen, state = task.corrupt(batch, generator)
        output = encoder(seen, teacher)
        if settings.formulation == "all_pairs":
            loss = all_pairs_loss(task, output.node, seen.pos)
        else:
            loss = task(seen, output, state).loss
        loss.backward()

    import gc

    gc.collect()
    reset_peak_rss()
    before = proc_status_bytes("VmRSS") // 1024
    step()
    peak = proc_status_bytes("VmHWM") // 1024
    times = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "residues": batch.num_nodes,
        "edges": batch.num_edges,
        "dim": encoder.out_dim,
        "step_mib": (peak - before) / 1024,
        "process_peak_mib": peak / 1024,
        "step_s": statistics.median(times) if times else float("nan"),
    }


# ---------------------------------------------------------------------------- the driver


def _run_worker(graph_file: Path, settings: Settings) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(graph_file),
        "--settings",
        json.dumps(dataclasses.asdict(settings)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"worker exited with {done.returncode}: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def all_pairs_tensor_gib(length: int, dim: int) -> float:
    """Size of the ``[L^2, d]`` float32 pair-feature tensor of the all-pairs head."""
    return length * length * dim * 4 / 2**30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--structure", type=Path, default=DEFAULT_STRUCTURE)
    parser.add_argument("--encoder", default="gin")
    parser.add_argument(
        "--paper",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="The paper's GIN (GINConfig.paper(): as wide as its input); --no-paper: the encoder's defaults.",
    )
    parser.add_argument(
        "--teacher-dim",
        type=int,
        default=1280,
        help="Width of the (random) teacher features fed to the encoder (ESM-2 650M: 1280; 0: no teacher).",
    )
    parser.add_argument("--num-pairs", type=int, default=256)
    parser.add_argument(
        "--all-pairs-limit-gib",
        type=float,
        default=1.5,
        help="Run the all-pairs step only where its L^2 x d pair tensor is below this (GiB); the step "
        "needs about five times that.",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Also write the rows as JSON here.")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        settings = Settings(**json.loads(args.settings))
        print(json.dumps(worker(args.worker, settings)))
        return

    import protsteps

    encoder_config: dict[str, Any] = {}
    teacher_dim: int | None = args.teacher_dim or None
    if args.paper:
        from protsteps.config import to_dict
        from protsteps_gnn import GINConfig

        if args.encoder != "gin":
            raise SystemExit("--paper is the paper's GIN; use --no-paper for other encoders")
        encoder_config = to_dict(GINConfig.paper())
    print(
        f"encoder {args.encoder} ({'paper setting' if args.paper else 'defaults'}), teacher width "
        f"{teacher_dim or 'none'}, {args.num_pairs} sampled pairs, {args.threads} threads",
        flush=True,
    )
    featurizer = protsteps.build("featurizer", "residue_graph")
    rows = []
    print(_header(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for length in args.lengths:
            graph = featurizer(joined_chain(args.structure, length))
            graph_file = Path(tmp) / f"graph_{length}.pt"
            torch.save(graph.to_dict(), graph_file)
            row: dict[str, Any] = {"residues": length, "edges": graph.num_edges}
            for formulation in ("sampled", "all_pairs"):
                settings = Settings(
                    encoder=args.encoder,
                    encoder_config=encoder_config,
                    teacher_dim=teacher_dim,
                    num_pairs=args.num_pairs,
                    formulation=formulation,
                    repeats=args.repeats,
                    threads=args.threads,
                )
                if formulation == "all_pairs":
                    dim = row["sampled"].get("dim", 0)
                    row["all_pairs_tensor_gib"] = all_pairs_tensor_gib(length, dim)
                    if row["all_pairs_tensor_gib"] > args.all_pairs_limit_gib:
                        row[formulation] = {"skipped": f"pair tensor {row['all_pairs_tensor_gib']:.1f} GiB"}
                        continue
                row[formulation] = _run_worker(graph_file, settings)
            rows.append(row)
            print(_format_row(row, rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _header() -> str:
    return (
        "| residues | edges | d | sampled: step peak (MiB) | sampled: step time (s) "
        "| all pairs: L^2 x d tensor (GiB) | all pairs: step peak (MiB) | all pairs: step time (s) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )


def _format_row(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One table row; an all-pairs step that was not run is extrapolated from the largest
    measured one by its ratio of step peak to pair tensor (marked ~, in italics)."""
    sampled = row["sampled"]
    if "error" in sampled:
        return f"| {row['residues']} | {row['edges']} | error: {sampled['error']} |"
    all_pairs = row["all_pairs"]
    if "step_mib" in all_pairs:
        ap_mem, ap_time = f"{all_pairs['step_mib']:.0f}", f"{all_pairs['step_s']:.2f}"
    else:
        measured = [r for r in rows if "step_mib" in r["all_pairs"]]
        if measured:
            ratio = measured[-1]["all_pairs"]["step_mib"] / (measured[-1]["all_pairs_tensor_gib"] * 1024)
            ap_mem = f"*~{ratio * row['all_pairs_tensor_gib'] * 1024:.0f} (not run)*"
        else:
            ap_mem = "not run: " + all_pairs.get("skipped", all_pairs.get("error", ""))
        ap_time = "-"
    return (
        f"| {row['residues']} | {row['edges']} | {sampled['dim']} | {sampled['step_mib']:.0f} "
        f"| {sampled['step_s']:.3f} | {row['all_pairs_tensor_gib']:.2f} | {ap_mem} | {ap_time} |"
    )


if __name__ == "__main__":
    main()
