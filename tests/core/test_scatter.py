"""The scatter helper: both backends against a slow, obviously right reference."""

from __future__ import annotations

import os

import pytest
import torch

from protsteps import scatter as sc

BACKENDS = ["native"]
if sc._torch_scatter_available():
    BACKENDS.append("torch_scatter")
elif os.environ.get("PROTSTEPS_REQUIRE_TORCH_SCATTER"):
    raise RuntimeError("PROTSTEPS_REQUIRE_TORCH_SCATTER is set but torch_scatter does not import")


def reference(src: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str) -> torch.Tensor:
    rows = []
    for s in range(dim_size):
        members = src[index == s]
        if members.shape[0] == 0:
            rows.append(torch.zeros(src.shape[1:], dtype=src.dtype))
        elif reduce == "sum":
            rows.append(members.sum(0))
        elif reduce == "mean":
            rows.append(members.mean(0))
        else:
            rows.append(members.max(0).values)
    return torch.stack(rows)


def random_case(seed: int, width: tuple[int, ...] = (5,)):
    g = torch.Generator().manual_seed(seed)
    dim_size = 9
    # segments 0, 4 and 8 stay empty: empty segments at the start, middle and end
    allowed = torch.tensor([1, 2, 3, 5, 6, 7])
    index = allowed[torch.randint(0, len(allowed), (40,), generator=g)]
    src = torch.randn(40, *width, generator=g, dtype=torch.float64)
    return src, index, dim_size


@pytest.mark.parametrize("use", BACKENDS)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("width", [(), (5,), (3, 2)])
def test_backends_match_reference_with_empty_segments(use, reduce, width):
    src, index, dim_size = random_case(0, width)
    out = sc.scatter(src, index, dim_size, reduce, use=use)
    expected = reference(src, index, dim_size, reduce)
    torch.testing.assert_close(out, expected)
    assert torch.all(out[[0, 4, 8]] == 0)


@pytest.mark.parametrize("use", BACKENDS)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_gradients_match_reference(use, reduce):
    src, index, dim_size = random_case(1)
    weights = torch.randn(dim_size, 5, dtype=torch.float64)
    a = src.clone().requires_grad_(True)
    (sc.scatter(a, index, dim_size, reduce, use=use) * weights).sum().backward()
    b = src.clone().requires_grad_(True)
    (reference(b, index, dim_size, reduce) * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.skipif(
    len(BACKENDS) < 2, reason="torch-scatter is not installed (nox -s tests_scatter installs it)"
)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_torch_scatter_and_native_agree_on_random_inputs(reduce):
    for seed in range(5):
        src, index, dim_size = random_case(seed)
        src = src.float()
        native = sc.scatter(src, index, dim_size + 3, reduce, use="native")
        fast = sc.scatter(src, index, dim_size + 3, reduce, use="torch_scatter")
        torch.testing.assert_close(native, fast)


def test_default_dim_size_and_environment_override(monkeypatch):
    out = sc.scatter_sum(torch.ones(3, 2), torch.tensor([0, 2, 2]))
    assert out.tolist() == [[1, 1], [0, 0], [2, 2]]
    monkeypatch.setenv("PROTSTEPS_SCATTER", "native")
    assert sc.backend() == "native"


def test_index_shape_is_checked():
    with pytest.raises(ValueError, match="index must be"):
        sc.scatter(torch.ones(3, 2), torch.tensor([0, 1]))
