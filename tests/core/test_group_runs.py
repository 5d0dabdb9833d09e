"""Residues of runs whose keys already increase are grouped without ``np.unique``: the
result equals the general grouping's (run with the keys negated, so that they decrease and
the general path is taken), on every shared PDB and mmCIF file."""

from __future__ import annotations

import numpy as np
import pytest

from protsteps.structure import _columnar, read_chains
from tests.conftest import STRUCTURES

FILES = (
    sorted(str(p.relative_to(STRUCTURES)) for p in STRUCTURES.rglob("*") if p.is_file())
    if STRUCTURES.is_dir()
    else []
)


def same_records(a, b) -> None:
    for field in (
        "chain_ids",
        "residue_names",
        "hetero",
        "residue_numbers",
        "insertion_codes",
        "backbone_mask",
    ):
        x, y = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
        assert x.dtype == y.dtype and np.array_equal(x, y), field
    assert a.backbone.tobytes() == b.backbone.tobytes()


@pytest.mark.parametrize("chunk", range(4))
def test_increasing_keys_group_as_the_general_path(structures_dir, monkeypatch, chunk):
    calls = []
    group = _columnar._group

    def recording(**kwargs):
        calls.append(kwargs)
        return group(**kwargs)

    monkeypatch.setattr(_columnar, "_group", recording)
    for name in FILES[chunk::4]:
        try:
            read_chains(structures_dir / name)
        except Exception:
            pass
    assert calls
    fast = 0
    for kwargs in calls:
        key = kwargs.get("key")
        if key is None:
            key = _columnar._residue_keys(
                kwargs["chain"], kwargs["kind"], kwargs["resname"], kwargs["resseq"], kwargs["icode"]
            )
        fast += bool((key[1:] > key[:-1]).all())
        same_records(group(**{**kwargs, "key": key}), group(**{**kwargs, "key": -key}))
    assert fast  # the shared files do take the fast path


def test_text_columns_widened_as_astype_str_decodes():
    """ASCII bytes widened to UCS-4 give astype(str)'s array (NULs and blanks anywhere, any
    width, strided input); other bytes are decoded as latin-1, as before."""
    from protsteps.structure._columnar import _text

    def decoded(values):
        values = values.reshape(-1)
        try:
            return values.astype(str)
        except UnicodeDecodeError:
            return np.char.decode(values, "latin-1")

    rng = np.random.default_rng(1)
    for size in (1, 3, 4, 8):
        for _ in range(100):
            n = int(rng.integers(0, 40))
            raw = rng.integers(0, 128, (n, size), dtype=np.uint8)
            raw[rng.random((n, size)) < 0.3] = 0
            raw[rng.random((n, size)) < 0.2] = 32
            values = raw.view(f"S{size}").reshape(-1) if n else np.zeros(0, f"S{size}")
            for column in (values, values[::2]):
                expected, got = decoded(column), _text(column)
                assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    latin = np.array([b"ALA", b"\xe9X"], dtype="S3")
    assert _text(latin).tolist() == ["ALA", "éX"]
