"""Regression corpus of the structure readers: small crafted files (real fragments of shared
structures, cut or edited the way downloads and tools break them), each with its expected
outcome in ``tests/data/regression/expected.json``: read with N residues, or refused with a
reason. Both readers must give that outcome."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from protsteps.errors import StructureError
from protsteps.structure import READERS, read_chains, read_chains_from_bytes
from protsteps.structure._complete import check_cif_complete, check_pdb_complete
from protsteps.structure._io import decompress, read_bytes, structure_format
from tests.conftest import ROOT

CORPUS = ROOT / "tests" / "data" / "regression"
EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text())


def test_every_corpus_file_has_an_outcome():
    files = {p.name for p in CORPUS.iterdir() if p.name != "expected.json"}
    assert files == set(EXPECTED)
    outcomes = [case["expect"] for case in EXPECTED.values()]
    assert sum(isinstance(o, int) for o in outcomes) >= 10
    assert sum(isinstance(o, str) for o in outcomes) >= 10


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_outcome(name, reader):
    path = CORPUS / name
    expected = EXPECTED[name]["expect"]
    if isinstance(expected, int):
        chains = read_chains(path, reader=reader)
        assert sum(len(c) for c in chains) == expected, EXPECTED[name]["why"]
    else:
        with pytest.raises(StructureError) as info:
            read_chains(path, reader=reader)
        message = str(info.value)
        assert message.startswith(f"{path}: ")
        assert expected.lower() in message.lower(), message
        assert "\n" not in message


@pytest.mark.parametrize(
    "name", ["pdb_cut_after_coordinates.pdb", "cif_short_row.cif", "pdb_model_never_closed.pdb"]
)
def test_refusals_name_the_line(name):
    with pytest.raises(StructureError, match=r"\(line \d+\)"):
        read_chains(CORPUS / name)


def test_comment_lines_inside_the_loop_keep_every_row():
    plain = read_chains(CORPUS / "cif_complete.cif")
    for variant in ("cif_comment_in_loop.cif", "cif_text_field_in_loop.cif", "cif_missing_values.cif"):
        chains = read_chains(CORPUS / variant)
        assert [c.sequence for c in chains] == [c.sequence for c in plain]
        assert all((a.backbone == b.backbone).all() for a, b in zip(chains, plain, strict=True))


def test_no_shared_structure_is_taken_for_truncated(structures_dir):
    """The whole-file rules accept every file of the shared set (994 real files, many of
    them without END, some without a final line break or with an open-ended layout)."""
    refused = []
    for path in sorted(structures_dir.rglob("*")):
        if not path.is_file():
            continue
        text = decompress(path, path.read_bytes())
        check = check_pdb_complete if structure_format(path, text) == "pdb" else check_cif_complete
        try:
            check(path, text)
        except StructureError as exc:
            refused.append(str(exc))
    assert not refused


def test_the_1osm_cut_is_refused_at_every_column(tmp_path, structures_dir):
    """1OSM cut inside a coordinate record used to be read with 77 of its 185 residues."""
    text = gzip.decompress((structures_dir / "mdanalysis" / "1osm.pdb.gz").read_bytes())
    line = text.index(b"\nATOM", len(text) // 3) + 1
    for column in (5, 20, 40, 53, 54, 58, 66, 70, 79):
        path = tmp_path / f"1osm_{column}.pdb"
        path.write_bytes(text[: line + column])
        for reader in READERS:
            with pytest.raises(StructureError, match="truncated"):
                read_chains(path, reader=reader)


# ---------------------------------------------------------------------------- size limit


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    import resource

    bomb = tmp_path / "bomb.pdb.gz"
    bomb.write_bytes(gzip.compress(b"REMARK" + b" " * (200 << 20), 9))  # 200 MiB in ~200 kB
    assert bomb.stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        StructureError, match=r"bomb\.pdb\.gz: decompresses to more than 16 MiB \(the size limit"
    ):
        read_chains(bomb, max_bytes=16 << 20)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 100


def test_the_limit_applies_to_plain_files_and_bytes(tmp_path, structures_dir):
    data = gzip.decompress((structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes())
    path = tmp_path / "plain.pdb"
    path.write_bytes(data)
    with pytest.raises(StructureError, match=r"plain\.pdb: is more than"):
        read_bytes(path, max_bytes=len(data) - 1)
    with pytest.raises(StructureError, match="is more than"):
        read_chains(path, max_bytes=len(data) - 1)
    with pytest.raises(StructureError, match="is more than"):
        read_chains_from_bytes(path, data, max_bytes=1000)
    assert len(read_chains(path, max_bytes=len(data))) == 2


def test_gzip_members_and_damage(tmp_path, structures_dir):
    raw = (structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes()
    text = gzip.decompress(raw)
    name = Path("two.pdb.gz")
    assert decompress(name, raw + raw) == text + text  # concatenated members, as gzip reads them
    assert decompress(name, raw + b"\x00" * 8) == text  # zero padding after the stream
    with pytest.raises(StructureError, match="data after the end of the gzip stream"):
        decompress(name, raw + b"trailing junk")
    with pytest.raises(StructureError, match="truncated gzip file"):
        decompress(name, raw[:-100])
    with pytest.raises(StructureError, match="decompresses to more than"):
        decompress(name, raw + raw, max_bytes=len(text) + 10)


def test_residue_numbers_far_apart_read_as_biopython_reads_them(tmp_path, structures_dir):
    """mmCIF's auth_seq_id may be any integer: numbers whose difference overflows int64 once
    made the columnar reader refuse the file (or could have merged residues)."""
    import numpy as np

    text = (structures_dir / "biopython" / "1A8O.cif").read_text()
    column = [line for line in text.splitlines() if line.startswith("_atom_site.")].index(
        "_atom_site.auth_seq_id "
    )
    wide = {"151": "-9000000000000000000", "152": "9000000000000000000", "160": "4611686018427387904"}
    lines = []
    for line in text.splitlines():
        if line.startswith("ATOM") or line.startswith("HETATM"):
            fields = line.split()
            fields[column] = wide.get(fields[column], fields[column])
            line = " ".join(fields)
        lines.append(line)
    path = tmp_path / "wide.cif"
    path.write_text("\n".join(lines) + "\n")
    columnar, reference = read_chains(path), read_chains(path, reader="biopython")
    assert [c.sequence for c in columnar] == [c.sequence for c in reference]
    for a, b in zip(columnar, reference, strict=True):
        assert np.array_equal(a.residue_numbers, b.residue_numbers)
        assert a.backbone.tobytes() == b.backbone.tobytes()
    assert {-9000000000000000000, 9000000000000000000, 4611686018427387904} <= set(
        columnar[0].residue_numbers.tolist()
    )


def test_residue_keys_too_wide_to_pack_keep_identity():
    """When the identifiers' ranges multiply past 63 bits, the keys are the rows' ranks: two
    residues get one key exactly when chain, kind, HETATM name, number and insertion code
    are all equal (what residue grouping needs of a key)."""
    import numpy as np

    from protsteps.structure import _columnar

    rng = np.random.default_rng(0)
    count = 80000

    def strings(width: int, distinct: int) -> np.ndarray:
        return np.array(
            [f"{i:0{width}d}".encode() for i in rng.integers(0, distinct, count)], dtype=f"S{width}"
        )

    chain, resname, icode = strings(6, 10**6), strings(6, 10**6), strings(6, 10**6)
    kind = rng.integers(0, 3, count).astype(np.int8)
    resseq = rng.integers(-(2**40), 2**40, count)
    resseq[: count // 2] = resseq[count // 2 :]  # half the rows repeat another's number
    chain[: count // 4] = chain[count // 4 : count // 2]
    calls = []
    unique = np.unique

    def recording(*args, **kwargs):
        calls.append(kwargs.get("axis"))
        return unique(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_columnar.np, "unique", recording)
        key = _columnar._residue_keys(chain, kind, resname, resseq, icode)
    assert 0 in calls, "the rows' ranks were not needed: the test does not reach the wide case"
    het = np.where(kind == 1, resname, b"")
    rows = list(
        zip(chain.tolist(), kind.tolist(), het.tolist(), resseq.tolist(), icode.tolist(), strict=True)
    )
    first: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        assert key[i] == key[first.setdefault(row, i)]
    assert len(set(key.tolist())) == len(first)
