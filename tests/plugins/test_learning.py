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

from pathlib import Path

import pytest
import torch

from protsteps import ProteinGraph
from protsteps_tasks.testing import distinct_chains, learning_scores

TRAIN, HELD_OUT = 20, 15
FILES = 80  # the first files of masif/, in name order


@pytest.fixture(scope="module")
def split(structures_dir: Path) -> tuple[list[ProteinGraph], list[ProteinGraph]]:
    graphs = distinct_chains(sorted((structures_dir / "masif").iterdir())[:FILES], 40, 300)
    order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(0)).tolist()
    train = [graphs[i] for i in order[:TRAIN]]
    held_out = [graphs[i] for i in order[TRAIN : TRAIN + HELD_OUT]]
    assert len(held_out) == HELD_OUT
    return train, held_out


@pytest.mark.slow
@pytest.mark.parametrize("encoder_name", ["gin", "equivariant"])
def test_learns_distances_and_dihedrals_of_held_out_structures(
    encoder_name: str, split: tuple[list[ProteinGraph], list[ProteinGraph]], one_thread: None
) -> None:
    scores = learning_scores(encoder_name, *split)
    print(f"\n{encoder_name}: {scores}")
    assert scores.distance_accuracy > scores.majority_bin_accuracy + 0.02, scores
    assert scores.distance_accuracy > scores.training_majority_accuracy + 0.02, scores
    assert scores.dihedral_error_deg < scores.mean_angle_error_deg - 10.0, scores
