"""Chains whose residues come in one run each are assembled without sorting: the same chains,
field for field, as the general grouping (np.unique and a stable sort, which handles any
order), on every shared file and on records whose chains interleave."""

from __future__ import annotations

import numpy as np
import pytest

from protsteps.structure import _chain, read_chains
from protsteps.structure._chain import Chain, ResidueRecords, assemble_chains
from tests.conftest import STRUCTURES

FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*") if p.is_file())
    if STRUCTURES.is_dir()
    else []
)


def reference(source: str, records: ResidueRecords) -> list[Chain]:
    """The chains as the general grouping (np.unique and a stable sort) assembles them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_chain, "_group_by_chain", _chain._group_general)
        return assemble_chains(source, records)


def same_chains(got: list[Chain], expected: list[Chain]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.source, a.chain_id, a.sequence) == (b.source, b.chain_id, b.sequence)
        for field in ("residue_names", "residue_numbers", "insertion_codes", "backbone_mask"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and np.array_equal(x, y), field
        assert a.backbone.dtype == b.backbone.dtype and a.backbone.tobytes() == b.backbone.tobytes()


@pytest.mark.parametrize("chunk", range(3))
def test_chains_equal_the_general_grouping_on_shared_files(structures_dir, monkeypatch, chunk):
    seen = []
    assemble = _chain.assemble_chains

    def recording(source, records):
        seen.append((source, records))
        return assemble(source, records)

    from protsteps.structure import _read

    monkeypatch.setattr(_read, "assemble_chains", recording)
    for name in FILES[chunk::3]:
        try:
            read_chains(structures_dir / name)
        except Exception:
            pass
    assert seen
    for source, records in seen:
        same_chains(assemble_chains(source, records), reference(source, records))


def test_interleaved_chains_take_the_general_grouping():
    rng = np.random.default_rng(2)
    for _ in range(50):
        count = int(rng.integers(1, 30))
        records = ResidueRecords(
            chain_ids=list(rng.choice(["A", "B", " ", "C"], count)),
            residue_names=list(rng.choice(["ALA", "HOH", "MSE", "XYZ", "DA"], count)),
            hetero=np.zeros(count, bool),
            residue_numbers=rng.integers(-5, 50, count),
            insertion_codes=list(rng.choice([" ", "A", ""], count)),
            backbone=rng.normal(size=(count, 4, 3)).astype(np.float32),
            backbone_mask=rng.random((count, 4)) > 0.2,
        )
        same_chains(assemble_chains("x", records), reference("x", records))


def test_both_groupings_equal_a_plain_python_grouping():
    rng = np.random.default_rng(5)
    for _ in range(200):
        count = int(rng.integers(1, 40))
        blocks = rng.choice(["A", "B", "C", " "], int(rng.integers(1, 6)))
        chain_ids = np.repeat(blocks, rng.integers(1, 9, len(blocks)))[:count]
        kept = np.sort(rng.choice(1000, len(chain_ids), replace=False))
        first: dict[str, int] = {}
        for i, c in enumerate(chain_ids.tolist()):
            first.setdefault(c, i)
        expected = sorted(range(len(chain_ids)), key=lambda i: (first[chain_ids[i]], i))
        sizes = [sum(1 for c in chain_ids.tolist() if c == k) for k in first]
        for group in (_chain._group_by_chain, _chain._group_general):
            order, rows, bounds = group(chain_ids, kept)
            assert order.tolist() == expected and rows.tolist() == kept[expected].tolist()
            assert np.diff(bounds).tolist() == sizes
