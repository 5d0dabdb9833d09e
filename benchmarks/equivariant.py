"""Pretraining throughput of the equivariant encoder: proteins per CPU-second, now and before.

One pretraining step is what ``protsteps_tasks.testing.learning_scores`` (the learning
check) runs: a batch of 4 ``masif/`` chains (40-300 residues, duplicate sequences removed;
``--structures`` reads another folder), the distance and dihedral tasks' corruption, the
encoder's forward pass, both losses, backward, one Adam step; one thread. Each setting
below runs ``--steps`` such steps per round on the same batches, its CPU time
(``time.process_time``) taken; the settings run in turn, in reverse order every other round,
so that a change of load weighs on all alike.
The ratio to the reference is the sum of the reference's CPU seconds over the rounds
divided by the setting's, with the lowest and highest single-round ratio beside it.

The reference is the encoder as it was at a commit (``--reference``, by default the one
before this work), its module read from git and built from the same settings, so old and
new code run in one process on one machine.

    python benchmarks/equivariant.py                     # default settings, 3 rounds
    python benchmarks/equivariant.py --steps 20 --rounds 5
    python benchmarks/equivariant.py --reference HEAD~3 --setting "scalar_paths=0"

``--setting`` adds an encoder setting of the current code (``name=value``, comma-separated)
as one more row; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MASIF = ROOT.parent / "shared" / "data" / "structures" / "masif"
#: the commit before the fused tensor product (issue 18, deliverable 3)
REFERENCE = "e98326a"
PROTEINS_PER_STEP = 4


def reference_encoder(commit: str) -> Any:
    """The default ``EquivariantEncoder`` (built from that commit's default settings) as the file ``plugins/protsteps_gnn/_equivariant.py`` was at
    ``commit``, imported as a module of the installed ``protsteps_gnn`` package (so that its
    relative imports resolve to today's siblings)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:plugins/protsteps_gnn/_equivariant.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "protsteps_gnn._equivariant_reference"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "protsteps_gnn"
    sys.modules[name] = module
    exec(compile(source, f"{commit}:_equivariant.py", "exec"), module.__dict__)
    from protsteps import BuildContext

    return module.EquivariantEncoder(module.EquivariantConfig(), BuildContext())


def parse_setting(text: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


class Trainer:
    """An encoder with both tasks and Adam, built as ``learning_scores`` builds them."""

    def __init__(self, encoder: Any) -> None:
        import protsteps
        from protsteps import BuildContext

        torch.manual_seed(0)
        self.encoder = encoder
        context = BuildContext(encoder_dim=encoder.out_dim)
        self.distance = protsteps.build("task", "distance", context=context)
        self.dihedral = protsteps.build("task", "dihedral", context=context)
        parameters = [*encoder.parameters(), *self.distance.parameters(), *self.dihedral.parameters()]
        self.optimizer = torch.optim.Adam(parameters, lr=3e-3)

    def steps(self, batches: list[Any]) -> float:
        """CPU seconds for one step on each batch."""
        generator = torch.Generator().manual_seed(0)
        start = time.process_time()
        for batch in batches:
            batch, pairs = self.distance.corrupt(batch, generator)
            batch, masked = self.dihedral.corrupt(batch, generator)
            output = self.encoder(batch)
            loss = self.distance(batch, output, pairs).loss + self.dihedral(batch, output, masked).loss
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10, help="steps per setting and round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--reference", default=REFERENCE, help=f"git commit of the reference (default {REFERENCE})"
    )
    parser.add_argument("--setting", action="append", default=[], help="name=value,...: one more row")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--structures",
        type=Path,
        default=MASIF,
        help="folder of structure files: its first 80 in sorted order are read (default: shared masif/)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    import protsteps
    from protsteps import BuildContext
    from protsteps.graph import collate
    from protsteps.structure import is_structure_path
    from protsteps_tasks.testing import distinct_chains

    paths = sorted(p for p in args.structures.rglob("*") if p.is_file() and is_structure_path(p))[:80]
    graphs = distinct_chains(paths, 40, 300)
    if len(graphs) < PROTEINS_PER_STEP:
        raise SystemExit(
            f"{args.structures}: {len(graphs)} distinct chains of 40-300 residues in its first "
            f"{len(paths)} structure files; a step needs {PROTEINS_PER_STEP}"
        )
    order = torch.Generator().manual_seed(0)
    batches = [
        collate(
            [graphs[i] for i in torch.randperm(len(graphs), generator=order)[:PROTEINS_PER_STEP].tolist()]
        )
        for _ in range(args.steps)
    ]
    residues = sum(b.num_nodes for b in batches) / len(batches)
    edges = sum(b.edge_index.shape[1] for b in batches) / len(batches)

    rows: dict[str, Trainer] = {}
    torch.manual_seed(0)
    rows[f"reference ({args.reference})"] = Trainer(reference_encoder(args.reference))
    torch.manual_seed(0)
    rows["current, defaults"] = Trainer(protsteps.build("encoder", "equivariant", context=BuildContext()))
    for text in args.setting:
        torch.manual_seed(0)
        encoder = protsteps.build("encoder", "equivariant", context=BuildContext(), **parse_setting(text))
        rows[f"current, {text}"] = Trainer(encoder)
    for trainer in rows.values():  # first calls (allocations, lazy set-up) are not timed
        trainer.steps(batches[:2])

    load_before = os.getloadavg()
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, 1 thread; load average before {load_before[0]:.2f} (1 min), "
        f"{load_before[1]:.2f} (5 min); {args.rounds} rounds of {args.steps} steps, "
        f"{PROTEINS_PER_STEP} proteins a step ({residues:.0f} residues, {edges:.0f} edges on average)\n"
    )
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for number in range(args.rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            cpu[name].append(rows[name].steps(batches))
    load_after = os.getloadavg()

    reference = names[0]
    print("| encoder | parameters | CPU ms/step | proteins per CPU-s | vs reference | single rounds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    results = []
    for name in names:
        seconds = sum(cpu[name])
        per_step = seconds / (args.rounds * args.steps)
        rate = PROTEINS_PER_STEP / per_step
        ratio = sum(cpu[reference]) / seconds
        rounds = [r / s for r, s in zip(cpu[reference], cpu[name], strict=True)]
        count = sum(p.numel() for p in rows[name].encoder.parameters())
        print(
            f"| {name} | {count:,} | {1000 * per_step:.0f} | {rate:.1f} | {ratio:.2f}x | "
            f"{min(rounds):.2f}-{max(rounds):.2f}x |"
        )
        results.append(
            {"encoder": name, "parameters": count, "cpu_seconds": cpu[name], "proteins_per_cpu_second": rate}
        )
    print(f"\nload average after {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")
    if args.json:
        args.json.write_text(
            json.dumps({"load_before": load_before, "load_after": load_after, "rows": results}, indent=2)
        )


if __name__ == "__main__":
    main()
