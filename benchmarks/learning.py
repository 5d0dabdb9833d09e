"""What the encoders learn without a teacher, on held-out real structures, per setting.

The protocol of ``tests/plugins/test_learning.py``, run over several train/held-out splits and for
several settings: train an encoder with the ``distance`` and ``dihedral`` tasks (Adam, 300
steps of 4 proteins, one thread, fixed seeds) on 20 ``masif/`` chains of 40-300 residues
(duplicate sequences removed), then score 15 other chains:

- distance bin accuracy of 4,096 sampled pairs per protein, against the majority bin of
  those same pairs (the strongest constant predictor);
- mean absolute angular error (degrees) of the masked residues' phi and psi, against
  predicting the circular mean angle of the training chains.

Usage::

    python benchmarks/learning.py                           # the ablation table in docs/encoders_tasks.md
    python benchmarks/learning.py --only gin --splits 0     # one setting, one split
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MASIF = ROOT.parent / "shared" / "data" / "structures" / "masif"

#: name -> (encoder, encoder settings, distance-task settings)
SETTINGS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "gin": ("gin", {}, {}),
    "gin, paper pair feature (z_i - z_j)^2": ("gin", {}, {"pair_feature": "squared_difference"}),
    "gin, paper edge weights 1/d^2": ("gin", {"edge_weight": "inverse_square"}, {}),
    "gin, paper edge weights, eps fixed": ("gin", {"edge_weight": "inverse_square", "learn_eps": False}, {}),
    "gin, paper edge weights and pair feature": (
        "gin",
        {"edge_weight": "inverse_square"},
        {"pair_feature": "squared_difference"},
    ),
    "equivariant": ("equivariant", {}, {}),
    "equivariant, 32 scalar channels": (
        "equivariant",
        {"hidden_irreps": "32x0e + 8x0o + 8x1o + 8x1e + 4x2e + 4x2o"},
        {},
    ),
}


def load_chains(files: int = 80) -> list[Any]:
    import protsteps

    seen: set[str] = set()
    graphs = []
    for path in sorted(MASIF.iterdir())[:files]:
        for graph in protsteps.featurize(path):
            if 40 <= graph.num_nodes <= 300 and graph.sequence not in seen:
                seen.add(graph.sequence)
                graphs.append(graph)
    return graphs


def run(
    graphs: list[Any],
    encoder_name: str,
    encoder_config: dict[str, Any],
    distance_config: dict[str, Any],
    split: int,
    steps: int = 300,
) -> dict[str, float]:
    import protsteps
    from protsteps import BuildContext, collate
    from protsteps_tasks import angular_error, sample_residue_pairs

    order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(split)).tolist()
    train = [graphs[i] for i in order[:20]]
    held_out = [graphs[i] for i in order[20:35]]
    torch.manual_seed(0)
    encoder = protsteps.build("encoder", encoder_name, context=BuildContext(), **encoder_config)
    context = BuildContext(encoder_dim=encoder.out_dim)
    distance = protsteps.build("task", "distance", context=context, **distance_config)
    dihedral = protsteps.build("task", "dihedral", context=context)
    optimizer = torch.optim.Adam(
        [*encoder.parameters(), *distance.parameters(), *dihedral.parameters()], lr=3e-3
    )
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        chosen = torch.randperm(len(train), generator=generator)[:4].tolist()
        batch = collate([train[i] for i in chosen])
        batch, pairs = distance.corrupt(batch, generator)
        batch, masked = dihedral.corrupt(batch, generator)
        output = encoder(batch)
        loss = distance(batch, output, pairs).loss + dihedral(batch, output, masked).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    encoder.eval()
    scoring = torch.Generator().manual_seed(123)
    with torch.no_grad():
        batch = collate(held_out)
        pairs = sample_residue_pairs(batch, 4096, distance.config.min_separation, scoring)
        batch, masked = dihedral.corrupt(batch, scoring)
        output = encoder(batch)
        target = distance.targets(batch, pairs)
        predicted = distance.head(distance.pair_features(output.node, pairs)).argmax(dim=1)
        training = collate(train)
        defined_train = training.dihedral_mask[:, :2].to(training.dihedrals.dtype)
        mean = torch.atan2(
            (torch.sin(training.dihedrals[:, :2]) * defined_train).sum(0),
            (torch.cos(training.dihedrals[:, :2]) * defined_train).sum(0),
        )
        defined = batch.dihedral_mask[masked][:, :2]
        angles = batch.dihedrals[masked][:, :2]
        model_error = angular_error(dihedral.predict(output.node[masked]), angles)[defined]
        mean_error = angular_error(mean.expand_as(angles), angles)[defined]
    return {
        "accuracy": float((predicted == target).float().mean()),
        "majority": float(torch.bincount(target).max() / target.numel()),
        "dihedral_deg": math.degrees(float(model_error.mean())),
        "mean_angle_deg": math.degrees(float(mean_error.mean())),
        "train_s": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", help="Run only these settings (names as in the table).")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    graphs = load_chains()
    names = args.only or list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting {unknown[0]!r}; settings: {', '.join(SETTINGS)}")
    print(
        "| setting | split | distance accuracy | majority bin | gain | dihedral error (°) "
        "| circular mean (°) | training (s) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        flush=True,
    )
    for name in names:
        encoder_name, encoder_config, distance_config = SETTINGS[name]
        gains = []
        for split in args.splits:
            r = run(graphs, encoder_name, encoder_config, distance_config, split, args.steps)
            gains.append(r["accuracy"] - r["majority"])
            print(
                f"| {name} | {split} | {r['accuracy']:.3f} | {r['majority']:.3f} | {gains[-1]:+.3f} "
                f"| {r['dihedral_deg']:.1f} | {r['mean_angle_deg']:.1f} | {r['train_s']:.0f} |",
                flush=True,
            )
        if len(gains) > 1:
            print(f"| {name} | mean | | | {sum(gains) / len(gains):+.3f} | | | |", flush=True)


if __name__ == "__main__":
    main()
