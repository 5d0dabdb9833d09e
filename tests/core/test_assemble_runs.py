"""Chains whose residues come in one run each are assembled without sorting: the same chains,
field for field, as the general grouping (the former code, kept here as the reference), on
every shared file and on records whose chains interleave."""

from __future__ import annotations

import numpy as np
import pytest

from protsteps.structure import _chain, read_chains
from protsteps.structure._chain import Chain, ResidueRecords, assemble_chains
from protsteps.structure._residues import is_known_amino_acid, is_nucleotide, is_water, parent_letter
from tests.conftest import STRUCTURES

FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*") if p.is_file())
    if STRUCTURES.is_dir()
    else []
)


def reference(source: str, records: ResidueRecords) -> list[Chain]:
    names = np.asarray(records.residue_names, dtype=str)
    mask = np.asarray(records.backbone_mask, dtype=bool).reshape(-1, 4)
    if len(names) == 0:
        return []
    unique_names, name_code = np.unique(names, return_inverse=True)
    name_code = name_code.reshape(-1)
    rules = [
        (is_known_amino_acid(n), not (is_water(n) or is_nucleotide(n)), parent_letter(n) or "X")
        for n in unique_names.tolist()
    ]
    known = np.array([r[0] for r in rules], dtype=bool)[name_code]
    other = np.array([r[1] for r in rules], dtype=bool)[name_code]
    letters = np.frombuffer("".join(r[2] for r in rules).encode("ascii"), dtype="S1")
    keep = mask[:, 1] & (known | (other & mask[:, 0] & mask[:, 2]))
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return []
    chain_ids = np.asarray(records.chain_ids, dtype=str)[kept]
    _, first, inverse = np.unique(chain_ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    chain_rank = rank[inverse.reshape(-1)]
    order = np.argsort(chain_rank, kind="stable")
    rows_all = kept[order]
    bounds = np.searchsorted(chain_rank[order], np.arange(len(first) + 1))
    numbers = np.asarray(records.residue_numbers, dtype=np.int64)
    icodes = np.char.strip(np.asarray(records.insertion_codes, dtype=str))
    backbone = np.where(mask[..., None], records.backbone, 0).astype(np.float32)
    chains = []
    for index in range(len(first)):
        rows = rows_all[bounds[index] : bounds[index + 1]]
        chains.append(
            Chain(
                source=source,
                chain_id=str(chain_ids[order[bounds[index]]]).strip(),
                sequence=letters[name_code[rows]].tobytes().decode("ascii"),
                residue_names=names[rows],
                residue_numbers=numbers[rows],
                insertion_codes=icodes[rows],
                backbone=backbone[rows],
                backbone_mask=mask[rows],
            )
        )
    return chains


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
