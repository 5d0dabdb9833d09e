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


# ------------------------------------------------------------------ weighted adjacency


def dense_adjacency(edge_index: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
    """Obviously right: A[t, s] accumulates the weight of every edge s -> t."""
    dense = torch.zeros(n, n, dtype=weight.dtype)
    dense.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    return dense


def real_edges(structures_dir) -> tuple[torch.Tensor, torch.Tensor, int]:
    import protsteps

    graphs = protsteps.featurize(structures_dir / "db55_unbound/1AY7_r_u.pdb.gz")
    graphs += protsteps.featurize(structures_dir / "biopython/1A8O.pdb.gz")
    batch = protsteps.collate(graphs)
    weight = 1.0 / (batch.edge_distance.double() ** 2 + 1e-6)
    return batch.edge_index, weight, batch.num_nodes


@pytest.mark.parametrize("method", ["sparse", "scatter"])
@pytest.mark.parametrize("order", ["as_featurized", "shuffled"])
def test_adjacency_product_matches_dense_reference_forward_and_backward(structures_dir, method, order):
    edge_index, weight, n = real_edges(structures_dir)
    if order == "shuffled":
        perm = torch.randperm(weight.shape[0], generator=torch.Generator().manual_seed(0))
        edge_index, weight = edge_index[:, perm], weight[perm]
    g = torch.Generator().manual_seed(1)
    h = torch.randn(n, 7, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(n, 7, generator=g, dtype=torch.float64)
    adjacency = sc.WeightedAdjacency(edge_index, weight, n, method)
    out = adjacency @ h
    (grad,) = torch.autograd.grad((out * upstream).sum(), h)
    dense = dense_adjacency(edge_index, weight, n)
    torch.testing.assert_close(out, dense @ h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, dense.T @ upstream, rtol=1e-12, atol=1e-12)


def test_sparse_and_scatter_paths_agree_in_float32_on_a_real_batch(structures_dir):
    edge_index, weight, n = real_edges(structures_dir)
    weight = weight.float()
    h = torch.randn(n, 256, generator=torch.Generator().manual_seed(2))
    upstream = torch.randn(n, 256, generator=torch.Generator().manual_seed(3))
    results = {}
    for method in ("sparse", "scatter"):
        x = h.clone().requires_grad_(True)
        out = sc.WeightedAdjacency(edge_index, weight, n, method) @ x
        (out * upstream).sum().backward()
        results[method] = (out, x.grad)
    torch.testing.assert_close(results["sparse"][0], results["scatter"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["sparse"][1], results["scatter"][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["sparse", "scatter"])
def test_adjacency_duplicates_add_up_and_isolated_nodes_get_zero(method):
    # edge 1 -> 0 twice, node 3 has no edge at all, trailing feature dimensions kept
    edge_index = torch.tensor([[1, 1, 2, 0], [0, 0, 1, 2]])
    weight = torch.tensor([0.5, 0.25, 2.0, 3.0], dtype=torch.float64)
    h = torch.arange(8, dtype=torch.float64).view(4, 2, 1)
    out = sc.WeightedAdjacency(edge_index, weight, 4, method) @ h
    expected = torch.tensor(
        [[[1.5], [2.25]], [[8.0], [10.0]], [[0.0], [3.0]], [[0.0], [0.0]]], dtype=torch.float64
    )
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("method", ["sparse", "scatter"])
def test_adjacency_without_edges_gives_zeros_with_a_gradient(method):
    h = torch.randn(3, 4, requires_grad=True)
    out = sc.WeightedAdjacency(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), 3, method) @ h
    out.sum().backward()
    assert torch.equal(out, torch.zeros(3, 4)) and torch.equal(h.grad, torch.zeros(3, 4))


def test_adjacency_second_derivatives_match_dense_reference(structures_dir):
    # create_graph=True through the product (the pseudo bi-level scheme's inner step does this)
    edge_index, weight, n = real_edges(structures_dir)
    dense = dense_adjacency(edge_index, weight, n)
    h = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    results = []
    for apply in (sc.WeightedAdjacency(edge_index, weight, n, "sparse").__matmul__, dense.__matmul__):
        x = h.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(apply(x).pow(2).sum(), x, create_graph=True)
        (second,) = torch.autograd.grad(grad.pow(2).sum(), x)
        results.append((grad, second))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-10)


def test_adjacency_weight_with_a_gradient_takes_the_scatter_path():
    edge_index = torch.tensor([[1, 2], [0, 0]])
    weight = torch.tensor([0.5, 2.0], requires_grad=True)
    adjacency = sc.WeightedAdjacency(edge_index, weight, 3, "sparse")
    assert adjacency.method == "scatter"
    (adjacency @ torch.tensor([[1.0], [10.0], [100.0]])).sum().backward()
    assert weight.grad.tolist() == [10.0, 100.0]


def test_aggregation_default_and_environment_override(monkeypatch):
    monkeypatch.delenv("PROTSTEPS_AGGREGATION", raising=False)
    assert sc.aggregation(torch.device("cpu")) == "sparse"
    assert sc.aggregation(torch.device("meta")) == "scatter"
    monkeypatch.setenv("PROTSTEPS_AGGREGATION", "scatter")
    assert sc.WeightedAdjacency(torch.tensor([[0], [1]]), torch.ones(1), 2).method == "scatter"


def test_adjacency_shapes_are_checked():
    with pytest.raises(ValueError, match=r"edge_index must be \[2, E\] and weight \[E\]"):
        sc.WeightedAdjacency(torch.zeros(2, 3, dtype=torch.long), torch.ones(2), 4)
    adjacency = sc.WeightedAdjacency(torch.tensor([[0], [1]]), torch.ones(1), 2)
    with pytest.raises(ValueError, match="expected 2 rows"):
        adjacency @ torch.ones(3, 1)


@pytest.mark.parametrize("method", ["sparse", "scatter"])
def test_aggregate_matches_dense_reference_in_h_and_the_self_weight(structures_dir, method):
    # c h + A h, with c a learned scalar (GIN's 1 + eps): values, both gradients, and the
    # gradients of gradients (create_graph=True) against (c I + A) as a dense matrix
    edge_index, weight, n = real_edges(structures_dir)
    dense = dense_adjacency(edge_index, weight, n)
    g = torch.Generator().manual_seed(5)
    h0 = torch.randn(n, 6, generator=g, dtype=torch.float64)
    upstream = torch.randn(n, 6, generator=g, dtype=torch.float64)
    results = []
    for apply in (
        lambda x, c: sc.WeightedAdjacency(edge_index, weight, n, method).aggregate(x, c),
        lambda x, c: c * x + dense @ x,
    ):
        h = h0.clone().requires_grad_(True)
        c = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
        out = apply(h, c)
        grad_h, grad_c = torch.autograd.grad((out * upstream).sum(), [h, c], create_graph=True)
        second = torch.autograd.grad(grad_h.pow(2).sum() + grad_c * (out**2).sum(), [h, c])
        results.append((out, grad_h, grad_c, *second))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_aggregate_with_a_number_and_in_float32_agrees_with_product_and_sum(structures_dir):
    edge_index, weight, n = real_edges(structures_dir)
    adjacency = sc.WeightedAdjacency(edge_index, weight.float(), n, "sparse")
    h = torch.randn(n, 256, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(adjacency.aggregate(h), h + adjacency @ h, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(adjacency.aggregate(h, 0.5), 0.5 * h + adjacency @ h, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["sparse", "scatter"])
def test_pair_difference_is_exactly_the_gathered_difference(method):
    # diagonal pairs (i, i) and repeated pairs included; float32, where exactness shows
    g = torch.Generator().manual_seed(7)
    first = torch.cat([torch.randint(0, 50, (300,), generator=g), torch.tensor([3, 3])])
    second = torch.cat([torch.randint(0, 50, (300,), generator=g), torch.tensor([3, 3])])
    h = torch.randn(50, 33, generator=g)
    upstream = torch.randn(302, 33, generator=g)
    difference = sc.WeightedAdjacency.pair_difference(first, second, 50, method=method)
    x = h.clone().requires_grad_(True)
    out = difference @ x
    (out * upstream).sum().backward()
    assert out.shape == (302, 33)
    assert torch.equal(out, h[first] - h[second])
    expected = torch.zeros(50, 33).index_add_(0, first, upstream).index_add_(0, second, -upstream)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)


def test_pair_difference_of_no_pairs_and_mismatched_pairs():
    empty = torch.zeros(0, dtype=torch.long)
    h = torch.randn(4, 2, requires_grad=True)
    out = sc.WeightedAdjacency.pair_difference(empty, empty, 4) @ h
    assert out.shape == (0, 2)
    with pytest.raises(ValueError, match=r"first and second must both be \[P\]"):
        sc.WeightedAdjacency.pair_difference(torch.tensor([0, 1]), torch.tensor([0]), 4)
    with pytest.raises(ValueError, match="aggregate needs a square adjacency"):
        sc.WeightedAdjacency.pair_difference(torch.tensor([0]), torch.tensor([1]), 4).aggregate(h)


def test_compressed_rows_use_int32_indices():
    # MKL and cuSPARSE multiply with int32 indices; int64 ones would be converted every product
    matrix = sc.WeightedAdjacency(torch.tensor([[1, 2], [0, 0]]), torch.ones(2), 3, "sparse").matrix(
        torch.float32, transposed=True
    )
    assert matrix.crow_indices().dtype == torch.int32 and matrix.col_indices().dtype == torch.int32
    assert matrix.to_dense().tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("bound", [1, 7, 2**16, 2**16 + 1, 5_000_000, 2**32])
def test_stable_argsort_is_torchs_stable_permutation(bound):
    g = torch.Generator().manual_seed(bound % 1000)
    # many repeats (ties must keep their order) and both ends of the range
    keys = torch.randint(0, bound, (3_000,), generator=g)
    keys[:5] = 0
    keys[5:10] = bound - 1
    got = sc.stable_argsort(keys, bound)
    assert got.dtype == torch.long
    assert torch.equal(got, torch.argsort(keys, stable=True))


def test_stable_argsort_of_short_and_strided_keys():
    assert torch.equal(sc.stable_argsort(torch.tensor([3]), 4), torch.tensor([0]))
    assert sc.stable_argsort(torch.zeros(0, dtype=torch.long), 4).numel() == 0
    edges = torch.tensor([[4, 1, 4, 0, 1], [0, 0, 1, 2, 2]])
    source = edges[0]  # a row of [2, E]; the transposed matrix sorts by it
    assert torch.equal(sc.stable_argsort(source, 5), torch.tensor([3, 1, 4, 0, 2]))
