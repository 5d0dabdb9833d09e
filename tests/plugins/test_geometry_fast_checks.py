"""check_geometry looks at every coordinate at once first and tells observed atoms apart only
when that finds something: it refuses exactly the chains, with exactly the messages, that the
per-atom checks refuse (NaN or infinite coordinates, beyond max_coordinate; observed or not)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from protsteps.errors import StructureError
from protsteps.structure import Chain
from protsteps_structure.residue_graph import (
    ResidueGraphConfig,
    _refuse_beyond,
    _refuse_non_finite,
    check_geometry,
)


def reference(chain: Chain, config: ResidueGraphConfig, where: str) -> None:
    """The per-atom checks run on every chain (not only when the whole-array maximum finds
    something), then the other checks."""
    backbone = chain.backbone.astype(np.float64)
    _refuse_non_finite(chain, backbone, chain.backbone_mask, where)
    if config.max_coordinate:
        _refuse_beyond(chain, backbone, chain.backbone_mask, config.max_coordinate, where)
    check_geometry(chain, ResidueGraphConfig(max_coordinate=0.0), where)  # the other checks


def outcome(check, chain, config):
    try:
        check(chain, config, "x")
    except StructureError as exc:
        return str(exc)
    return None


def make_chain(length: int, seed: int) -> Chain:
    rng = np.random.default_rng(seed)
    ca = np.cumsum(rng.normal(0, 2.2, (length, 3)), axis=0)
    backbone = (ca[:, None, :] + rng.normal(0, 1.2, (length, 4, 3))).astype(np.float32)
    backbone[:, 1] = ca
    mask = rng.random((length, 4)) > 0.1
    mask[:, 1] = True
    backbone[~mask] = 0.0
    return Chain(
        source="x",
        chain_id="A",
        sequence="A" * length,
        residue_names=np.array(["ALA"] * length),
        residue_numbers=np.arange(length),
        insertion_codes=np.array([""] * length),
        backbone=backbone,
        backbone_mask=mask,
    )


BAD = [np.nan, np.inf, -np.inf, 2e4, -2e4, 9999.0, 10000.0, 10000.001, 3e38]


@pytest.mark.parametrize("seed", range(6))
def test_fast_checks_refuse_as_the_per_atom_checks(seed):
    rng = np.random.default_rng(seed)
    for limit, values in itertools.product([10000.0, 0.0, 50.0], [BAD, BAD[:1] + BAD[3:], BAD[3:]]):
        config = ResidueGraphConfig(max_coordinate=limit)
        for _ in range(20):
            chain = make_chain(int(rng.integers(3, 40)), int(rng.integers(1 << 30)))
            for _ in range(int(rng.integers(0, 3))):
                residue, atom, axis = rng.integers(len(chain)), rng.integers(4), rng.integers(3)
                chain.backbone[residue, atom, axis] = rng.choice(values)  # observed or not
            assert outcome(check_geometry, chain, config) == outcome(reference, chain, config)


def test_the_spread_shortcut_lets_through_only_chains_the_spread_itself_lets_through():
    """min_ca_spread: the extent-based shortcut answers "at least" only where the spread
    computed as before is at least the threshold, on clouds of every shape scaled so that
    their spread falls just around it (both sides, down to the shortcut's margin)."""
    from protsteps_structure.residue_graph import _spread_at_least

    rng = np.random.default_rng(3)
    decided = 0
    for trial in range(400):
        length = int(rng.integers(3, 60))
        shape = rng.normal(0, 1, 3) ** 2 + 1e-3  # flat, thin and round clouds
        ca = (rng.normal(0, 1, (length, 3)) * shape).astype(np.float32).astype(np.float64)
        spread = float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(-1)).max())
        extent = float((ca.max(0) - ca.min(0)).max())
        for threshold in (
            extent / 2 * (1 - 1e-6),
            extent / 2 / (1 + 1e-6),
            extent / 2,
            spread,
            spread * 1.01,
        ):
            if _spread_at_least(ca, threshold):
                decided += 1
                assert spread >= threshold, (trial, threshold)
    assert decided > 400, "the shortcut decides most clouds"
