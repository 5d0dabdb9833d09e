"""A task's refusal of its targets (NonFiniteLossError) under torchrun: the refusing process
must not leave the others waiting in the step's collectives, so it turns into a NaN loss
that the all-process finiteness check catches in every process at once."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from protsteps.components import EncoderOutput, PretextTask, TaskOutput
from protsteps.model import PretrainModel
from protsteps.optim import NonFiniteLossError, raise_if_not_finite


class _Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, batch, features=None):
        node = batch.pos * self.weight
        return EncoderOutput(node=node, graph=node.mean(0, keepdim=True))


class _Refuses(PretextTask):
    def forward(self, batch, output, state=None) -> TaskOutput:
        raise NonFiniteLossError(f"chain {batch.chain_ids[0]}: a distance overflows")


class _Batch:
    def __init__(self) -> None:
        self.pos = torch.randn(5, 3)
        self.chain_ids = ["1ABC_A"]
        self.sources = ["1abc.pdb"]
        self.num_nodes = 5
        self.num_graphs = 1


@pytest.fixture()
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_alone_the_refusal_is_raised_as_it_is():
    model = PretrainModel(_Encoder(), {"boom": _Refuses()}, {"boom": 1.0})
    with pytest.raises(NonFiniteLossError, match="1ABC_A: a distance overflows"):
        model.pretext_loss(_Batch(), {}, None)


def test_under_a_process_group_it_becomes_a_nan_loss_every_process_checks(one_process_group, monkeypatch):
    model = PretrainModel(_Encoder(), {"boom": _Refuses()}, {"boom": 1.0})
    loss, _, logs = model.pretext_loss(_Batch(), {}, None)
    assert torch.isnan(loss) and torch.isnan(logs["boom/loss"])
    assert loss.requires_grad, "the loss still reaches the student's parameters (DDP's hooks)"
    import protsteps.optim as optim

    monkeypatch.setattr(optim, "describe_batch", lambda batch: "1ABC_A")
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan on batch of 1ABC_A"):
        raise_if_not_finite(loss, _Batch(), distributed=True)
