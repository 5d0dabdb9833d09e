"""BinaryCIF (``.bcif``) inputs: real mmCIF structures encoded as BinaryCIF (with the
encodings Mol* and the PDB's model server use) read to the same chains as the mmCIF file,
by both readers; the decoder checked against Biopython's own; damaged files refused."""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
from pathlib import Path

import msgpack
import numpy as np
import pytest

from protsteps.errors import StructureError
from protsteps.structure import read_chains
from protsteps.structure._bcif import _decode

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "structures"
CIF_FILES = sorted(p for p in SHARED.rglob("*.cif*") if "invalid" not in p.name and "short" not in p.name)

# ------------------------------------------------------------------ a BinaryCIF encoder
# Written for these tests from the specification (github.com/molstar/BinaryCIF): each
# column gets the encodings a real writer would choose for its kind of data, so that every
# decoder runs on real structures.


def _byte_array(values: np.ndarray, dtype: str) -> tuple[bytes, dict]:
    dtype = np.dtype(dtype).newbyteorder("<").str.replace("|", "<")
    array = np.asarray(values).astype(dtype)
    code = {"<i1": 1, "<i2": 2, "<i4": 3, "<u1": 4, "<u2": 5, "<u4": 6, "<f4": 32, "<f8": 33}[dtype]
    return array.tobytes(), {"kind": "ByteArray", "type": code}


def _integer_packing(values: np.ndarray) -> tuple[np.ndarray, dict]:
    values = np.asarray(values, dtype=np.int64)
    small = bool(np.all(np.abs(values) < 2000))
    dtype, top, bottom = (np.int8, 127, -128) if small else (np.int16, 32767, -32768)
    packed: list[int] = []
    for v in values.tolist():
        while v >= top:
            packed.append(top)
            v -= top
        while v <= bottom:
            packed.append(bottom)
            v -= bottom
        packed.append(v)
    encoding = {
        "kind": "IntegerPacking",
        "byteCount": np.dtype(dtype).itemsize,
        "isUnsigned": False,
        "srcSize": len(values),
    }
    return np.asarray(packed, dtype=dtype), encoding


def _run_length(values: np.ndarray) -> tuple[np.ndarray, dict]:
    values = np.asarray(values, dtype=np.int64)
    if len(values) == 0:
        return values, {"kind": "RunLength", "srcType": 3, "srcSize": 0}
    change = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate(([0], change))
    counts = np.diff(np.concatenate((starts, [len(values)])))
    pairs = np.stack([values[starts], counts], axis=1).reshape(-1)
    return pairs, {"kind": "RunLength", "srcType": 3, "srcSize": len(values)}


def _delta(values: np.ndarray) -> tuple[np.ndarray, dict]:
    values = np.asarray(values, dtype=np.int64)
    origin = int(values[0]) if len(values) else 0
    deltas = np.diff(values, prepend=origin)
    return deltas, {"kind": "Delta", "origin": origin, "srcType": 3}


def _ints(values: np.ndarray, style: int) -> tuple[bytes, list[dict]]:
    """Integers through one of three chains of encodings."""
    encodings = []
    if style == 0:  # serial numbers: Delta, RunLength, IntegerPacking, ByteArray
        values, e = _delta(values)
        encodings.append(e)
        values, e = _run_length(values)
        encodings.append(e)
        values, e = _integer_packing(values)
        encodings.append(e)
        data, e = _byte_array(values, values.dtype.str)
    elif style == 1:  # residue numbers: RunLength, ByteArray int32
        values, e = _run_length(values)
        encodings.append(e)
        data, e = _byte_array(values, "<i4")
    else:
        data, e = _byte_array(values, "<i4")
    encodings.append(e)
    return data, encodings


def _floats(values: np.ndarray, decimals: int, style: int) -> tuple[bytes, list[dict]]:
    factor = 10**decimals
    ints = np.rint(np.asarray(values, dtype=np.float64) * factor).astype(np.int64)
    encodings = [{"kind": "FixedPoint", "factor": factor, "srcType": 33}]
    if style == 0:  # coordinates: FixedPoint, Delta, IntegerPacking, ByteArray
        ints, e = _delta(ints)
        encodings.append(e)
        ints, e = _integer_packing(ints)
        encodings.append(e)
        data, e = _byte_array(ints, ints.dtype.str)
    else:  # occupancy, B factors: FixedPoint, RunLength, ByteArray int32
        ints, e = _run_length(ints)
        encodings.append(e)
        data, e = _byte_array(ints, "<i4")
    encodings.append(e)
    return data, encodings


def _strings(values: list[str]) -> tuple[bytes, list[dict]]:
    unique = list(dict.fromkeys(values))
    index = {s: i for i, s in enumerate(unique)}
    offsets = np.cumsum([0] + [len(s.encode()) for s in unique])
    offset_data, offset_encoding = _ints(offsets, 0)
    indices = np.asarray([index[s] for s in values], dtype=np.int64)
    index_data, index_encoding = _ints(indices, 1)
    encoding = {
        "kind": "StringArray",
        "dataEncoding": index_encoding,
        "stringData": "".join(unique),
        "offsetEncoding": offset_encoding,
        "offsets": offset_data,
    }
    return index_data, [encoding]


_COORDINATES = {"Cartn_x", "Cartn_y", "Cartn_z"}


def _encode_column(name: str, tokens: list[str], position: int) -> dict:
    missing = [t in (".", "?") for t in tokens]
    present = [t for t, m in zip(tokens, missing, strict=True) if not m]
    column: dict = {"name": name, "mask": None}
    if any(missing):
        mask = np.asarray([(t == ".") + 2 * (t == "?") for t in tokens], dtype=np.uint8)
        data, e = _byte_array(mask, "<u1")
        column["mask"] = {"data": data, "encoding": [e]}
    try:
        numbers = [float(t) for t in present]
        numeric = bool(present) and name not in {"label_atom_id", "label_comp_id", "auth_atom_id"}
    except ValueError:
        numeric = False
    if numeric and all("." not in t and "e" not in t.lower() for t in present):
        values = np.asarray([int(t) if not m else 0 for t, m in zip(tokens, missing, strict=True)])
        data, encodings = _ints(values, position % 3)
    elif numeric:
        decimals = max(len(t.partition(".")[2]) for t in present)
        values = np.asarray([float(t) if not m else 0.0 for t, m in zip(tokens, missing, strict=True)])
        data, encodings = _floats(values, decimals, 0 if name in _COORDINATES else 1)
        del numbers
    else:
        data, encodings = _strings(["" if m else t for t, m in zip(tokens, missing, strict=True)])
    column["data"] = {"data": data, "encoding": encodings}
    return column


def encode_bcif(cif: Path) -> bytes:
    """The ``_atom_site`` loop of an mmCIF file as a BinaryCIF file's bytes."""
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    text = gzip.decompress(cif.read_bytes()) if cif.name.endswith(".gz") else cif.read_bytes()
    parsed = MMCIF2Dict(io.StringIO(text.decode("latin-1")))
    items = {k[len("_atom_site.") :]: v for k, v in parsed.items() if k.startswith("_atom_site.")}
    rows = len(next(iter(items.values())))
    columns = [_encode_column(name, list(values), i) for i, (name, values) in enumerate(items.items())]
    document = {
        "version": "0.3.0",
        "encoder": "protsteps tests",
        "dataBlocks": [
            {
                "header": cif.name.split(".")[0],
                "categories": [
                    {
                        "name": "_entry",
                        "rowCount": 1,
                        "columns": [_encode_column("id", [cif.name.split(".")[0]], 2)],
                    },
                    {"name": "_atom_site", "rowCount": rows, "columns": columns},
                ],
            }
        ],
    }
    return msgpack.packb(document, use_bin_type=True)


def _chains_equal(a: list, b: list, atol: float = 0.0) -> None:
    assert [c.chain_id for c in a] == [c.chain_id for c in b]
    for x, y in zip(a, b, strict=True):
        assert x.sequence == y.sequence
        assert np.array_equal(x.residue_numbers, y.residue_numbers)
        assert np.array_equal(x.backbone_mask, y.backbone_mask)
        assert (
            np.array_equal(x.backbone, y.backbone)
            if atol == 0
            else np.allclose(x.backbone, y.backbone, atol=atol)
        )


# ------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    folder = tmp_path_factory.mktemp("bcif")
    out = {}
    for cif in CIF_FILES:
        target = folder / (cif.name.split(".")[0] + ".bcif")
        target.write_bytes(encode_bcif(cif))
        out[cif] = target
    return out


def test_there_are_shared_mmcif_files() -> None:
    assert len(CIF_FILES) >= 10


@pytest.mark.parametrize("cif", CIF_FILES, ids=lambda p: p.name)
def test_bcif_reads_as_its_mmcif(cif: Path, encoded: dict[Path, Path]) -> None:
    try:
        expected = read_chains(cif)
    except StructureError as exc:  # a file both forms refuse alike
        with pytest.raises(StructureError) as info:
            read_chains(encoded[cif])
        assert str(info.value).split(": ", 1)[1] == str(exc).split(": ", 1)[1]
        return
    _chains_equal(read_chains(encoded[cif]), expected)
    _chains_equal(read_chains(encoded[cif], reader="biopython"), read_chains(cif, reader="biopython"))


def test_decoder_agrees_with_biopythons(encoded: dict[Path, Path]) -> None:
    """An independent decoder (Biopython's) gives the same column values."""
    from Bio.PDB import binary_cif

    checked = 0
    for path in list(encoded.values())[:6]:
        document = msgpack.unpackb(path.read_bytes(), raw=False)
        for column in document["dataBlocks"][0]["categories"][1]["columns"]:
            ours = _decode(column["data"]["data"], column["data"]["encoding"])
            theirs = binary_cif._decode(
                {"data": {"data": column["data"]["data"], "encoding": list(column["data"]["encoding"])}}
            )
            theirs = np.asarray(theirs)
            if ours.dtype.kind == "S":
                assert [v.decode() for v in ours] == [str(v) for v in theirs]
            else:
                assert np.allclose(ours.astype(np.float64), theirs.astype(np.float64), rtol=0, atol=1e-6)
            checked += 1
    assert checked > 50


def test_bcif_gzipped_and_unnamed(tmp_path: Path, encoded: dict[Path, Path]) -> None:
    cif = next(p for p in CIF_FILES if p.name.startswith("1A8O"))
    data = encoded[cif].read_bytes()
    (tmp_path / "x.bcif.gz").write_bytes(gzip.compress(data))
    (tmp_path / "noname").write_bytes(data)
    expected = read_chains(cif)
    _chains_equal(read_chains(tmp_path / "x.bcif.gz"), expected)
    _chains_equal(read_chains(tmp_path / "noname"), expected)  # told from the content
    chain = expected[0].chain_id
    _chains_equal(read_chains(f"{tmp_path / 'x.bcif.gz'}:{chain}"), expected[:1])


def _document(path: Path) -> dict:
    return msgpack.unpackb(path.read_bytes(), raw=False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d, b: b[: len(b) // 2], "truncated BinaryCIF file"),
        (lambda d, b: b"data_1ABC\nloop_\n", "not a BinaryCIF file .* an mmCIF text file named .bcif"),
        (
            lambda d, b: msgpack.packb({"version": "0.3", "dataBlocks": 3}),
            "not a BinaryCIF file .no dataBlocks",
        ),
        (lambda d, b: b.replace(b"dataBlocks", b"dataBlocky"), "not a BinaryCIF file .no dataBlocks"),
        (lambda d, b: b + b"\x00", "data after its end"),
    ],
)
def test_damaged_bcif_refused(tmp_path: Path, encoded: dict[Path, Path], damage, message: str) -> None:
    source = next(iter(encoded.values()))
    target = tmp_path / "damaged.bcif"
    target.write_bytes(damage(None, source.read_bytes()))
    with pytest.raises(StructureError, match=message) as info:
        read_chains(target)
    assert str(target) in str(info.value)


def _with_column(path: Path, name: str, change) -> bytes:
    document = _document(path)
    for column in document["dataBlocks"][0]["categories"][1]["columns"]:
        if column["name"] == name:
            change(column)
    return msgpack.packb(document, use_bin_type=True)


def test_bad_columns_refused_naming_them(tmp_path: Path, encoded: dict[Path, Path]) -> None:
    source = next(iter(encoded.values()))
    target = tmp_path / "bad.bcif"

    def unknown(column: dict) -> None:
        column["data"]["encoding"][0]["kind"] = "Zstd"

    target.write_bytes(_with_column(source, "Cartn_x", unknown))
    with pytest.raises(StructureError, match=r"column _atom_site\.Cartn_x \(unknown encoding 'Zstd'\)"):
        read_chains(target)

    def short(column: dict) -> None:
        column["data"] = {"data": b"\x00\x00\x00\x00", "encoding": [{"kind": "ByteArray", "type": 3}]}

    target.write_bytes(_with_column(source, "Cartn_y", short))
    with pytest.raises(StructureError, match=r"Cartn_y \(1 values, the category has \d+ rows\)"):
        read_chains(target)

    def missing(column: dict) -> None:
        mask = np.zeros(len(_decode(column["data"]["data"], column["data"]["encoding"])), np.uint8)
        mask[3] = 2
        column["mask"] = {"data": mask.tobytes(), "encoding": [{"kind": "ByteArray", "type": 4}]}

    target.write_bytes(_with_column(source, "Cartn_z", missing))
    with pytest.raises(StructureError, match="invalid or missing coordinates"):
        read_chains(target)


def test_bcif_without_atom_site(tmp_path: Path) -> None:
    target = tmp_path / "empty.bcif"
    target.write_bytes(msgpack.packb({"dataBlocks": [{"header": "x", "categories": []}]}))
    with pytest.raises(StructureError, match="no _atom_site category"):
        read_chains(target)


def test_bcif_in_featurize_and_tar(tmp_path: Path, encoded: dict[Path, Path]) -> None:
    """A folder of .bcif files and a tar archive of them are featurized like any input, to
    the graphs of the mmCIF files they were made from."""
    import torch

    import protsteps
    from protsteps.featurize import featurize_many

    folder = tmp_path / "in"
    folder.mkdir()
    picked = {
        cif: bcif for cif, bcif in encoded.items() if cif.name.split(".")[0] in {"1A8O", "3JQH", "5PTI"}
    }
    assert len(picked) == 3
    for bcif in picked.values():
        shutil.copy(bcif, folder / bcif.name)
    with tarfile.open(tmp_path / "shard.tar", "w") as archive:
        for bcif in picked.values():
            archive.add(bcif, arcname=f"models/{bcif.name}")
    for source in (folder, tmp_path / "shard.tar"):
        report = featurize_many([source], cache_dir=tmp_path / f"cache-{source.name}")
        assert report.failed == [] and report.skipped == []
        for cif, bcif in picked.items():
            name = f"{source}::models/{bcif.name}" if source.suffix == ".tar" else str(folder / bcif.name)
            rows = [r for r in report.ok if r["source"] == name]
            direct = protsteps.featurize(cif)
            assert [(r["chain"], r["residues"]) for r in rows] == [(g.chain_id, g.num_nodes) for g in direct]
    graphs = protsteps.featurize(folder / "1A8O.bcif")
    direct = protsteps.featurize(next(c for c in picked if c.name.startswith("1A8O")))
    assert torch.equal(graphs[0].pos, direct[0].pos) and torch.equal(
        graphs[0].edge_index, direct[0].edge_index
    )


def _biotite_bcif(cif: Path, target: Path) -> None:
    """The ``_atom_site`` category written by another BinaryCIF implementation (biotite's,
    with the encodings its ``compress`` picks per column)."""
    pdbx = pytest.importorskip("biotite.structure.io.pdbx")
    text = gzip.decompress(cif.read_bytes()) if cif.name.endswith(".gz") else cif.read_bytes()
    category = pdbx.CIFFile.read(io.StringIO(text.decode("latin-1"))).block["atom_site"]
    columns = {}
    for name in category:
        column = category[name]
        for dtype in (np.int32, np.float64, str):
            try:
                values = column.as_array(dtype) if dtype is str else column.as_array(dtype, masked_value=0)
                break
            except (ValueError, TypeError):
                continue
        mask = None if column.mask is None else column.mask.array
        columns[name] = pdbx.BinaryCIFColumn(pdbx.BinaryCIFData(values), mask)
    block = pdbx.BinaryCIFBlock({"atom_site": pdbx.BinaryCIFCategory(columns)})
    pdbx.compress(pdbx.BinaryCIFFile({cif.name.split(".")[0]: block})).write(str(target))


@pytest.mark.parametrize("cif", CIF_FILES, ids=lambda p: p.name)
def test_bcif_written_by_biotite(cif: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.bcif"
    _biotite_bcif(cif, target)
    try:
        expected = read_chains(cif)
    except StructureError:
        with pytest.raises(StructureError):
            read_chains(target)
        return
    # biotite's compress may store coordinates with fewer decimals than the file had (6WG6)
    _chains_equal(read_chains(target), expected, atol=1e-4)
