"""Structures read in place from tar archives and FoldComp databases, never unpacked to disk:
every member featurized or reported, member and chain selection, AlphaFold DB names, worker
processes, and the cache."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch

import protsteps
from protsteps.featurize import featurize_many
from protsteps.sources import afdb_model

MASIF = ("1A2K_C", "1AVX_B", "1BRS_A", "1ERN_A", "1ERN_B")


def _afdb(index: int) -> str:
    return f"AF-P{index:05d}-F1-model_v4"


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture()
def shard(tmp_path, structures_dir) -> Path:
    """An AlphaFold-DB-style proteome shard: each model as .cif.gz and .pdb.gz (AFDB ships
    both), a non-structure member, a sub-folder, and a truncated structure."""
    path = tmp_path / "in" / "UP000000000_v4.tar"
    path.parent.mkdir()
    with tarfile.open(path, "w") as archive:
        for index, name in enumerate(MASIF[:3]):
            pdb_gz = (structures_dir / "masif" / f"{name}.pdb.gz").read_bytes()
            _add(archive, f"{_afdb(index)}.pdb.gz", pdb_gz)
            _add(archive, f"{_afdb(index)}.cif.gz", gzip.compress(b"data_copy\n"))  # the second copy
        _add(archive, "README.txt", b"a proteome shard\n")
        _add(archive, "extra/1A8O.cif", (structures_dir / "biopython" / "1A8O.cif").read_bytes())
        _add(archive, "empty.pdb", b"")
    return path


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_tar_shard_is_read_in_place_every_member_featurized_or_reported(shard, tmp_path, structures_dir):
    before = _files_under(tmp_path)
    report = featurize_many([shard], cache_dir=tmp_path / "cache")
    created = {p for p in _files_under(tmp_path) - before if "cache" not in p.parts}
    assert created == set(), "nothing is unpacked to disk"
    sources = [r["source"] for r in report.ok]
    for index, name in enumerate(MASIF[:3]):
        member = f"{shard}::{_afdb(index)}.pdb.gz"
        direct = protsteps.featurize(structures_dir / "masif" / f"{name}.pdb.gz")
        rows = [r for r in report.ok if r["source"] == member]
        assert [(r["chain"], r["residues"]) for r in rows] == [(g.chain_id, g.num_nodes) for g in direct]
    assert f"{shard}::extra/1A8O.cif" in sources
    assert report.failed == [{"source": f"{shard}::empty.pdb", "error": f"{shard}::empty.pdb: empty file"}]
    skipped = {Path(r["source"]).name.split("::")[-1]: r["reason"] for r in report.skipped}
    assert skipped == {
        **{
            f"{_afdb(i)}.cif.gz": f"the same AlphaFold DB model as {shard}::{_afdb(i)}.pdb.gz"
            for i in range(3)
        },
        "README.txt": "not a structure file name (.pdb/.ent/.cif/.mmcif/.bcif, optionally .gz)",
    }
    # the graphs read back from the cache are those of the files themselves
    from protsteps.data import GraphDataset

    dataset = GraphDataset.from_report(report)
    first = dataset[0]
    assert first.source == f"{shard}::{_afdb(0)}.pdb.gz"
    direct = protsteps.featurize(structures_dir / "masif" / f"{MASIF[0]}.pdb.gz")[0]
    assert torch.equal(first.pos, direct.pos) and torch.equal(first.edge_index, direct.edge_index)
    # a second run is all cache hits; two workers give the same report
    again = featurize_many([shard], cache_dir=tmp_path / "cache")
    assert again.cache_hits == again.files == 5  # three models, 1A8O, empty.pdb
    assert again.ok == report.ok
    pooled = featurize_many([shard], cache_dir=tmp_path / "cache2", workers=2)
    assert pooled.to_json() | {"cache": None} == report.to_json() | {"cache": None}


def test_members_and_chains_selected_by_name_and_from_a_list(shard, tmp_path, structures_dir):
    gz = tmp_path / "in" / "small.tar.gz"
    with tarfile.open(gz, "w:gz") as archive:
        _add(archive, "1A2K_AB.pdb.gz", (structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes())
        _add(archive, "1A8O.cif", (structures_dir / "biopython" / "1A8O.cif").read_bytes())
    listing = tmp_path / "in" / "wanted.txt"
    listing.write_text(
        f"# two members\n{shard}::{_afdb(1)}.pdb.gz\n{gz}::1A2K_AB.pdb.gz:B\n{gz}::missing.pdb\n"
    )
    report = featurize_many([listing], cache_dir=tmp_path / "cache")
    assert [(r["source"], r["chain"]) for r in report.ok] == [
        (f"{shard}::{_afdb(1)}.pdb.gz", "B"),  # 1AVX_B
        (f"{gz}::1A2K_AB.pdb.gz:B", "B"),
    ]
    assert report.skipped == [{"source": f"{gz}::missing.pdb", "reason": "no such member in the archive"}]
    bad = featurize_many([f"{tmp_path / 'nothing.tar'}::x.pdb"], cache_dir=tmp_path / "cache")
    assert bad.failed and "not a tar archive or a FoldComp database" in bad.failed[0]["error"]


def test_a_folder_of_shards_and_a_damaged_archive(shard, tmp_path):
    damaged = shard.parent / "cut.tar"
    damaged.write_bytes(shard.read_bytes()[:3000])
    report = featurize_many([shard.parent], cache_dir=tmp_path / "cache")
    assert any(r["source"].startswith(f"{shard}::") for r in report.ok)
    reasons = [r["reason"] for r in report.skipped if r["source"] == str(damaged)]
    assert reasons and "ends early or is damaged" in reasons[0]


def test_afdb_names_whatever_the_version():
    assert afdb_model("AF-P69905-F1-model_v4.cif.gz") == ("P69905", 1, 4)
    assert afdb_model("shard/AF-A0A024R1R8-F12-model_v6.pdb") == ("A0A024R1R8", 12, 6)
    assert afdb_model("1abc.pdb") is None


# ---------------------------------------------------------------------------- FoldComp


@pytest.fixture(scope="module")
def foldcomp():
    return pytest.importorskip(
        "foldcomp", reason='needs protsteps[foldcomp]: pip install "protsteps[foldcomp]"'
    )


_BUILD = textwrap.dedent(
    """
    import foldcomp, gzip, struct, sys
    from pathlib import Path
    out, sources = Path(sys.argv[1]), sys.argv[2:]
    data, index, lookup = b"", [], []
    for key, source in enumerate(sources):
        text = gzip.decompress(Path(source).read_bytes()).decode()
        record = foldcomp.compress(f"AF-P{key:05d}-F1-model_v4", text)
        index.append(f"{key}\\t{len(data)}\\t{len(record) + 1}")
        lookup.append(f"{key}\\tAF-P{key:05d}-F1-model_v4\\t0")
        data += record + b"\\0"
    out.write_bytes(data)
    Path(f"{out}.index").write_text("\\n".join(index) + "\\n")
    Path(f"{out}.lookup").write_text("\\n".join(lookup) + "\\n")
    Path(f"{out}.dbtype").write_bytes(struct.pack("<i", 0))
    """
)


@pytest.fixture()
def database(foldcomp, tmp_path, structures_dir) -> Path:
    """A FoldComp database in its ffindex layout, compressed by foldcomp itself (in a child
    process: foldcomp's compressor is native code)."""
    path = tmp_path / "db" / "afdb_small"
    path.parent.mkdir()
    sources = [str(structures_dir / "masif" / f"{name}.pdb.gz") for name in MASIF]
    subprocess.run([sys.executable, "-c", _BUILD, str(path), *sources], check=True, timeout=120)
    return path


def _records(database: Path) -> list[bytes]:
    data = database.read_bytes()
    rows = [line.split("\t") for line in Path(f"{database}.index").read_text().splitlines()]
    return [data[int(offset) : int(offset) + int(length) - 1] for _, offset, length in rows]


def test_a_foldcomp_database_is_read_in_place(foldcomp, database, tmp_path, structures_dir):
    before = _files_under(tmp_path)
    report = featurize_many([database], cache_dir=tmp_path / "cache")
    assert {p for p in _files_under(tmp_path) - before if "cache" not in p.parts} == set()
    assert [r["source"] for r in report.ok] == [f"{database}::{_afdb(i)}" for i in range(len(MASIF))]
    assert report.failed == [] and report.skipped == []
    dataset = protsteps.data.GraphDataset.from_report(report)
    records = _records(database)
    for index, name in enumerate(MASIF):
        direct = protsteps.featurize(structures_dir / "masif" / f"{name}.pdb.gz")[0]
        graph = dataset[index]
        assert graph.sequence == direct.sequence and graph.num_nodes == direct.num_nodes
        # exactly what foldcomp's own decompression of the record gives, read as a file
        _, text = foldcomp.decompress(records[index])
        reference = tmp_path / "reference" / f"{index}.pdb"
        reference.parent.mkdir(exist_ok=True)
        reference.write_text(text)
        (expected,) = protsteps.featurize(reference)
        assert torch.equal(graph.pos, expected.pos) and torch.equal(graph.dihedrals, expected.dihedrals)
    # selected by name, from the command line and in a list; a name it lacks is reported
    listing = tmp_path / "ids.txt"
    listing.write_text(f"{database}::{_afdb(3)}\n{database}::AF-NOPE-F1-model_v4\n")
    picked = featurize_many([f"{database}::{_afdb(1)}", listing], cache_dir=tmp_path / "cache")
    assert [r["source"] for r in picked.ok] == [f"{database}::{_afdb(1)}", f"{database}::{_afdb(3)}"]
    assert picked.cache_hits == 2
    assert picked.skipped == [
        {"source": f"{database}::AF-NOPE-F1-model_v4", "reason": "no such entry in the FoldComp database"}
    ]
    # workers decompress the records themselves and give the same report
    pooled = featurize_many([database], cache_dir=tmp_path / "cache2", workers=2)
    assert pooled.ok == [dict(r) for r in report.ok]


def test_a_damaged_foldcomp_record_is_a_failed_row(database, tmp_path):
    data = bytearray(database.read_bytes())
    first_length = int(Path(f"{database}.index").read_text().splitlines()[0].split("\t")[2])
    data[0:4] = b"XXXX"  # the first record's magic
    database.write_bytes(bytes(data))
    report = featurize_many([database], cache_dir=tmp_path / "cache")
    assert report.failed == [
        {
            "source": f"{database}::{_afdb(0)}",
            "error": f"{database}::{_afdb(0)}: not a FoldComp record (no FCMP magic)",
        }
    ]
    assert len(report.ok) == len(MASIF) - 1 and first_length > 4


def test_a_record_that_crashes_the_decompressor_costs_only_that_record(database, tmp_path, monkeypatch):
    """FoldComp's C decompressor may crash on a bad record: with one worker too, records are
    decompressed in a worker process, so the crash fails that record and the run goes on."""
    import importlib
    import signal

    featurize_module = importlib.import_module("protsteps.featurize")  # (the name is also a function)
    if featurize_module._start_method() != "fork":
        pytest.skip("the crash is planted through fork")
    real = featurize_module.decode_item
    doomed = _afdb(1)

    def crash_on_one(item):
        if item.spec.endswith(doomed):
            os.kill(os.getpid(), signal.SIGKILL)  # as a crash in a C extension ends the process
        return real(item)

    monkeypatch.setattr(featurize_module, "decode_item", crash_on_one)
    report = featurize_many([database], cache_dir=tmp_path / "cache", workers=1)
    assert [f["source"] for f in report.failed] == [f"{database}::{doomed}"]
    assert "the worker process died" in report.failed[0]["error"]
    assert len(report.ok) == len(MASIF) - 1


def test_the_cli_featurizes_a_database(database, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "protsteps",
            "featurize",
            str(database),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert len(report["ok"]) == len(MASIF)
    assert f"{len(MASIF)} chains from {len(MASIF)} files" in done.stdout
