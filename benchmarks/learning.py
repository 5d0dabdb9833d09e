"""What the encoders learn without a teacher, on held-out real structures, per setting.

The protocol of ``tests/plugins/test_learning.py`` (``protsteps_tasks.testing.learning_scores``), run over several train/held-out splits and for
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
    "equivariant, every scalar channel makes vector messages (before issue 18)": (
        "equivariant",
        {"mixing_scalars": 0},
        {},
    ),
    "equivariant, 32 scalar channels make vector messages": ("equivariant", {"mixing_scalars": 32}, {}),
    "equivariant, 32 scalar channels": (
        "equivariant",
        {"hidden_irreps": "32x0e + 8x0o + 8x1o + 8x1e + 4x2e + 4x2o"},
        {},
    ),
}


def run(
    graphs: list[Any],
    encoder_name: str,
    encoder_config: dict[str, Any],
    distance_config: dict[str, Any],
    split: int,
    steps: int = 300,
) -> Any:
    from protsteps_tasks.testing import learning_scores

    order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(split)).tolist()
    train = [graphs[i] for i in order[:20]]
    held_out = [graphs[i] for i in order[20:35]]
    return learning_scores(
        encoder_name,
        train,
        held_out,
        encoder_config=encoder_config,
        distance_config=distance_config,
        steps=steps,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", help="Run only these settings (names as in the table).")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from protsteps_tasks.testing import distinct_chains

    graphs = distinct_chains(sorted(MASIF.iterdir())[:80], 40, 300)
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
            gains.append(r.distance_accuracy - r.majority_bin_accuracy)
            print(
                f"| {name} | {split} | {r.distance_accuracy:.3f} | {r.majority_bin_accuracy:.3f} "
                f"| {gains[-1]:+.3f} | {r.dihedral_error_deg:.1f} | {r.mean_angle_error_deg:.1f} "
                f"| {r.train_seconds:.0f} |",
                flush=True,
            )
        if len(gains) > 1:
            print(f"| {name} | mean | | | {sum(gains) / len(gains):+.3f} | | | |", flush=True)


if __name__ == "__main__":
    main()
