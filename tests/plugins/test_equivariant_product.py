"""The equivariant encoder's fused tensor product against e3nn's, and its mixing_scalars."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from protsteps import BuildContext, build
from protsteps.errors import ConfigError
from protsteps_gnn._equivariant import ChannelwiseProduct, EquivariantLayer

HIDDEN = o3.Irreps("128x0e + 8x0o + 8x1o + 8x1e + 4x2e + 4x2o")


def _inputs(layer: EquivariantLayer, nodes: int = 40, edges: int = 300) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(nodes, layer.irreps_in.dim, generator=generator, dtype=torch.float64)
    vectors = torch.randn(edges, 3, generator=generator, dtype=torch.float64)
    sh = o3.spherical_harmonics(layer.irreps_sh, vectors, normalize=True, normalization="component")
    weight = torch.randn(edges, layer.tensor_product.weight_numel, generator=generator, dtype=torch.float64)
    source = torch.randint(0, nodes, (edges,), generator=generator)
    return x, sh, weight, source


@pytest.mark.parametrize("irreps_in", ["128x0e", str(HIDDEN), "4x0e + 3x1o + 2x2e + 1x3o"])
@pytest.mark.parametrize("mixing_scalars", [0, 16])
@pytest.mark.parametrize("lmax", [1, 3])
def test_fused_product_equals_e3nn_tensor_product(irreps_in: str, mixing_scalars: int, lmax: int) -> None:
    layer = EquivariantLayer(o3.Irreps(irreps_in), HIDDEN, lmax=lmax, mixing_scalars=mixing_scalars).double()
    x, sh, weight, source = _inputs(layer)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    reference = layer.tensor_product(x[source], sh, weight)
    fused = layer.fused_product.to_e3nn_layout(layer.fused_product(x, sh, weight, source))
    assert fused.shape == reference.shape == (len(source), layer.irreps_mid.dim)
    # e3nn keeps its Wigner 3j symbols in float32: agreement to float32's precision
    torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-6)
    # drawn from its own generator: from the global one it depended on the tests run before in
    # the same process, and one draw in many put a gradient 1.02e-6 from the reference
    cotangent = torch.randn(
        reference.shape, generator=torch.Generator().manual_seed(1), dtype=reference.dtype
    )
    grads_reference = torch.autograd.grad(reference, (x, weight), cotangent)
    grads_fused = torch.autograd.grad(fused, (x, weight), cotangent)
    for got, want in zip(grads_fused, grads_reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_fused_product_refuses_products_it_does_not_compute() -> None:
    shared = o3.TensorProduct("4x0e", "1x0e", "4x0e", [(0, 0, 0, "uvu", True)], shared_weights=True)
    with pytest.raises(ValueError, match="per-call weights"):
        ChannelwiseProduct(shared)
    full = o3.TensorProduct(
        "4x0e", "1x0e", "4x0e", [(0, 0, 0, "uvw", True)], shared_weights=False, internal_weights=False
    )
    with pytest.raises(ValueError, match="'uvu' paths"):
        ChannelwiseProduct(full)


def test_mixing_scalars_limits_the_scalars_that_make_vector_messages() -> None:
    every = EquivariantLayer(HIDDEN, HIDDEN, mixing_scalars=0)
    few = EquivariantLayer(HIDDEN, HIDDEN, mixing_scalars=16)
    assert every.irreps_mid.dim == 1720  # 128 scalars x (1 + 3 + 5) + the other irreps' 568
    assert few.irreps_mid.dim == 128 + 16 * 8 + 568
    # 1o and 2e messages from scalars come from the first 16 channels only
    scalar_paths = [
        few.irreps_mid[ins.i_out]
        for ins in few.tensor_product.instructions
        if few.irreps_product_in[ins.i_in1].ir == o3.Irrep("0e")
    ]
    assert sorted(str(p) for p in scalar_paths) == sorted(["16x0e", "16x1o", "16x2e", "112x0e"])
    # as many as the block holds, or more: every scalar mixes, as with 0
    assert EquivariantLayer(HIDDEN, HIDDEN, mixing_scalars=128).irreps_mid == every.irreps_mid
    assert EquivariantLayer(HIDDEN, HIDDEN, mixing_scalars=500).irreps_mid == every.irreps_mid


def test_mixing_scalars_setting_is_checked() -> None:
    encoder = build("encoder", "equivariant", context=BuildContext(), mixing_scalars=8)
    assert encoder.layers[1].irreps_product_in[0] == (8, o3.Irrep("0e"))
    with pytest.raises(ConfigError, match="mixing_scalars"):
        build("encoder", "equivariant", context=BuildContext(), mixing_scalars=-1)
