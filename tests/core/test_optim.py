"""The student's optimiser: torch's fused Adam where it applies, the same updates as the loop."""

from __future__ import annotations

import pytest
import torch

from protsteps.optim import make_optimizer


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_optimiser_takes_the_per_tensor_loop_s_steps(weight_decay):
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(256, 57, generator=g), torch.randn(256, generator=g), torch.randn((), generator=g)]
    results = []
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        if fused:
            optimizer = make_optimizer(params, 1e-2, weight_decay)
        else:
            kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
            optimizer = kind(params, lr=1e-2, weight_decay=weight_decay, foreach=False)
        grads = torch.Generator().manual_seed(1)
        for _ in range(30):
            for p in params:
                p.grad = torch.randn(p.shape, generator=grads)
            optimizer.step()
        assert optimizer.param_groups[0]["fused"] is (True if fused else None)
        results.append(params)
    for a, b, before in zip(*results, start, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert (a - before).abs().max() > 5e-3  # the steps were taken


def test_parameters_a_fused_kernel_cannot_take_get_the_loop():
    params = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    assert not make_optimizer(params, 1e-3, 0.0).param_groups[0]["fused"]


def test_parameter_groups_are_taken_as_finetune_gives_them():
    """finetune gives groups (encoder and head at their own rates), their params as generators."""
    encoder, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    groups = [{"params": encoder.parameters(), "lr": 1e-4}, {"params": head.parameters()}]
    optimizer = make_optimizer(groups, 1e-2, 0.0)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-2]
    assert all(g["fused"] for g in optimizer.param_groups)
