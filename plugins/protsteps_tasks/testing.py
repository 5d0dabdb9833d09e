"""A learning check for encoders and pretext-task settings, on real structures.

Train an encoder with the ``distance`` and ``dihedral`` tasks and no teacher on some
chains, then score chains it has not seen against the trivial predictors:

- distance: bin accuracy of sampled pairs against the majority bin of those same pairs (the
  strongest constant predictor) and against the training chains' majority bin;
- dihedral: mean absolute angular error of the masked residues' phi and psi against
  predicting the circular mean angle of the training chains.

``tests/plugins/test_learning.py`` asserts on it; ``benchmarks/learning.py`` prints it for
several settings and splits. A third-party encoder can be checked the same way::

    from protsteps_tasks.testing import distinct_chains, learning_scores
    chains = distinct_chains(sorted(Path("structures").glob("*.pdb")))
    print(learning_scores("my_encoder", chains[:20], chains[20:35]))

Seeds fix parameters, batches, pairs and masks; on one thread (``torch.set_num_threads(1)``)
the numbers are the same on every run of one machine.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

import protsteps
from protsteps import BuildContext, ProteinGraph, collate

from ._dihedral import angular_error
from ._distance import sample_residue_pairs

__all__ = ["LearningScores", "circular_mean", "distinct_chains", "learning_scores"]

#: pairs per protein scored on the held-out chains
SCORED_PAIRS = 4096


@dataclasses.dataclass(frozen=True)
class LearningScores:
    distance_accuracy: float
    majority_bin_accuracy: float
    training_majority_accuracy: float
    dihedral_error_deg: float
    mean_angle_error_deg: float
    train_seconds: float

    def __str__(self) -> str:
        return (
            f"distance accuracy {self.distance_accuracy:.3f} vs majority bin {self.majority_bin_accuracy:.3f} "
            f"(training majority bin {self.training_majority_accuracy:.3f}); dihedral error "
            f"{self.dihedral_error_deg:.1f}° vs circular mean {self.mean_angle_error_deg:.1f}°"
        )


def distinct_chains(
    paths: Iterable[str | os.PathLike[str]], min_length: int = 40, max_length: int = 300
) -> list[ProteinGraph]:
    """The chains of ``paths`` with ``min_length`` to ``max_length`` residues, in file order,
    each sequence once (so a held-out chain is never a copy of a training chain)."""
    seen: set[str] = set()
    graphs = []
    for path in paths:
        for graph in protsteps.featurize(path):
            if min_length <= graph.num_nodes <= max_length and graph.sequence not in seen:
                seen.add(graph.sequence)
                graphs.append(graph)
    return graphs


def circular_mean(graphs: list[ProteinGraph]) -> Tensor:
    """``[2]`` circular mean of the defined phi and psi angles of ``graphs``."""
    batch = collate(graphs)
    defined = batch.dihedral_mask[:, :2].to(batch.dihedrals.dtype)
    angles = batch.dihedrals[:, :2]
    return torch.atan2((torch.sin(angles) * defined).sum(0), (torch.cos(angles) * defined).sum(0))


def learning_scores(
    encoder_name: str,
    train: list[ProteinGraph],
    held_out: list[ProteinGraph],
    *,
    encoder_config: Mapping[str, Any] | None = None,
    distance_config: Mapping[str, Any] | None = None,
    steps: int = 300,
    proteins_per_step: int = 4,
    learning_rate: float = 3e-3,
) -> LearningScores:
    """Train ``encoder_name`` with both tasks (Adam, ``steps`` batches of
    ``proteins_per_step`` chains drawn from ``train``), then score ``held_out``."""
    torch.manual_seed(0)
    encoder = protsteps.build("encoder", encoder_name, context=BuildContext(), **dict(encoder_config or {}))
    context = BuildContext(encoder_dim=encoder.out_dim)
    distance = protsteps.build("task", "distance", context=context, **dict(distance_config or {}))
    dihedral = protsteps.build("task", "dihedral", context=context)
    parameters = [*encoder.parameters(), *distance.parameters(), *dihedral.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        chosen = torch.randperm(len(train), generator=generator)[:proteins_per_step].tolist()
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
    min_separation = distance.config.min_separation
    with torch.no_grad():
        batch = collate(held_out)
        pairs = sample_residue_pairs(batch, SCORED_PAIRS, min_separation, scoring)
        batch, masked = dihedral.corrupt(batch, scoring)
        output = encoder(batch)
        target = distance.targets(batch, pairs)
        predicted = distance.head(distance.pair_features(output.node, pairs)).argmax(dim=1)
        training = collate(train)
        training_pairs = sample_residue_pairs(training, SCORED_PAIRS, min_separation, scoring)
        training_majority = torch.bincount(distance.targets(training, training_pairs)).argmax()

        defined = batch.dihedral_mask[masked][:, :2]
        angles = batch.dihedrals[masked][:, :2]
        model_error = angular_error(dihedral.predict(output.node[masked]), angles)[defined]
        mean_error = angular_error(circular_mean(train).expand_as(angles), angles)[defined]
    return LearningScores(
        distance_accuracy=float((predicted == target).float().mean()),
        majority_bin_accuracy=float(torch.bincount(target).max() / target.numel()),
        training_majority_accuracy=float((target == training_majority).float().mean()),
        dihedral_error_deg=math.degrees(float(model_error.mean())),
        mean_angle_error_deg=math.degrees(float(mean_error.mean())),
        train_seconds=seconds,
    )
