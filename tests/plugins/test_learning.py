"""Learning on real data: each encoder, trained with both pretext tasks and no teacher on 20
real structures, beats the trivial predictors on 15 held-out structures.

- distance: bin accuracy above the majority bin of the very pairs it is scored on (the
  strongest constant predictor, stronger than the training set's majority bin);
- dihedral: mean absolute angular error of the masked residues' phi and psi below that of
  predicting the circular mean angle of the training structures.

Structures: ``masif/`` chains of 40 to 300 residues, duplicate sequences removed (so no
held-out chain is a training chain), split by a fixed permutation. Seeds fix parameters,
batches, pairs and masks, and training runs on one thread (with several, PyTorch's CPU
reductions may add in a different order from run to run), so the numbers are the same on
every run of one machine.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import protsteps
from protsteps import BuildContext, ProteinGraph, collate
from protsteps_tasks import angular_error, sample_residue_pairs

TRAIN, HELD_OUT = 20, 15
STEPS, PROTEINS_PER_STEP, LEARNING_RATE = 300, 4, 3e-3
FILES = 80  # the first files of masif/, in name order


@dataclasses.dataclass
class Scores:
    distance_accuracy: float
    majority_bin_accuracy: float
    training_majority_accuracy: float
    dihedral_error_deg: float
    mean_angle_error_deg: float

    def __str__(self) -> str:
        return (
            f"distance accuracy {self.distance_accuracy:.3f} vs majority bin {self.majority_bin_accuracy:.3f} "
            f"(training majority bin {self.training_majority_accuracy:.3f}); dihedral error "
            f"{self.dihedral_error_deg:.1f}° vs circular mean {self.mean_angle_error_deg:.1f}°"
        )


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def split(structures_dir: Path) -> tuple[list[ProteinGraph], list[ProteinGraph]]:
    seen: set[str] = set()
    graphs = []
    for path in sorted((structures_dir / "masif").iterdir())[:FILES]:
        for graph in protsteps.featurize(path):
            if 40 <= graph.num_nodes <= 300 and graph.sequence not in seen:
                seen.add(graph.sequence)
                graphs.append(graph)
    order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(0)).tolist()
    train = [graphs[i] for i in order[:TRAIN]]
    held_out = [graphs[i] for i in order[TRAIN : TRAIN + HELD_OUT]]
    assert len(held_out) == HELD_OUT
    return train, held_out


def circular_mean(graphs: list[ProteinGraph]) -> torch.Tensor:
    """[2] circular mean of the defined phi and psi angles."""
    batch = collate(graphs)
    defined = batch.dihedral_mask[:, :2].to(batch.dihedrals.dtype)
    angles = batch.dihedrals[:, :2]
    return torch.atan2((torch.sin(angles) * defined).sum(0), (torch.cos(angles) * defined).sum(0))


def train_and_score(encoder_name: str, train: list[ProteinGraph], held_out: list[ProteinGraph]) -> Scores:
    torch.manual_seed(0)
    encoder = protsteps.build("encoder", encoder_name, context=BuildContext())
    context = BuildContext(encoder_dim=encoder.out_dim)
    distance = protsteps.build("task", "distance", context=context)
    dihedral = protsteps.build("task", "dihedral", context=context)
    parameters = [*encoder.parameters(), *distance.parameters(), *dihedral.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        chosen = torch.randperm(len(train), generator=generator)[:PROTEINS_PER_STEP].tolist()
        batch = collate([train[i] for i in chosen])
        batch, pairs = distance.corrupt(batch, generator)
        batch, masked = dihedral.corrupt(batch, generator)
        output = encoder(batch)
        loss = distance(batch, output, pairs).loss + dihedral(batch, output, masked).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    encoder.eval()
    scoring = torch.Generator().manual_seed(123)
    with torch.no_grad():
        batch = collate(held_out)
        pairs = sample_residue_pairs(batch, 4096, distance.config.min_separation, scoring)
        batch, masked = dihedral.corrupt(batch, scoring)
        output = encoder(batch)
        target = distance.targets(batch, pairs)
        predicted = distance.head(distance.pair_features(output.node, pairs)).argmax(dim=1)
        training_pairs = sample_residue_pairs(collate(train), 4096, distance.config.min_separation, scoring)
        training_majority = torch.bincount(distance.targets(collate(train), training_pairs)).argmax()

        defined = batch.dihedral_mask[masked][:, :2]
        angles = batch.dihedrals[masked][:, :2]
        model_error = angular_error(dihedral.predict(output.node[masked]), angles)[defined]
        mean_error = angular_error(circular_mean(train).expand_as(angles), angles)[defined]
    return Scores(
        distance_accuracy=float((predicted == target).float().mean()),
        majority_bin_accuracy=float(torch.bincount(target).max() / target.numel()),
        training_majority_accuracy=float((target == training_majority).float().mean()),
        dihedral_error_deg=math.degrees(float(model_error.mean())),
        mean_angle_error_deg=math.degrees(float(mean_error.mean())),
    )


@pytest.mark.slow
@pytest.mark.parametrize("encoder_name", ["gin", "equivariant"])
def test_learns_distances_and_dihedrals_of_held_out_structures(
    encoder_name: str, split: tuple[list[ProteinGraph], list[ProteinGraph]], one_thread: None
) -> None:
    scores = train_and_score(encoder_name, *split)
    print(f"\n{encoder_name}: {scores}")
    assert scores.distance_accuracy > scores.majority_bin_accuracy + 0.02, scores
    assert scores.distance_accuracy > scores.training_majority_accuracy + 0.02, scores
    assert scores.dihedral_error_deg < scores.mean_angle_error_deg - 10.0, scores
