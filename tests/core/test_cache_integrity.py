"""The featurize cache is keyed by everything that decides a result: the bytes, what the
file's name decides (format, ``.gz``), the featurizer's code; its entries are checksummed;
inputs that cannot be read once (FIFOs) or do not exist (dangling symlinks) are reported."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from protsteps.cli import main
from protsteps.errors import ProtstepsError
from protsteps.featurize import FeaturizerSpec, GraphCache, code_fingerprint, featurize_many


def _outcome(report, name: str):
    """(chains with residues, errors) of the input called ``name`` in ``report``."""
    ok = sorted((r["chain"], r["residues"]) for r in report.ok if Path(r["source"]).name == name)
    errors = sorted(r["error"] for r in report.failed if Path(r["source"]).name == name)
    return ok, [e.replace(str(Path(e.split(":")[0]).parent), "") for e in errors]


@pytest.fixture()
def same_bytes(tmp_path, structures_dir) -> list[Path]:
    """One mmCIF file's bytes under four names: .cif, .pdb, .cif.gz (not gzip) and no suffix
    (told from the content); and one PDB file's bytes as .pdb and .cif."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    cif = (structures_dir / "biopython" / "1A8O.cif").read_bytes()
    pdb = gzip.decompress((structures_dir / "biopython" / "1A8O.pdb.gz").read_bytes())
    names = {"a.cif": cif, "b.pdb": cif, "c.cif.gz": cif, "d_noext.txt": cif, "e.pdb": pdb, "f.cif": pdb}
    for name, data in names.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in names]


def test_one_content_under_different_names_gives_each_name_its_own_result(same_bytes, tmp_path):
    # each file alone, each in a fresh cache: the reference outcome of its name
    alone = {}
    for index, path in enumerate(same_bytes):
        report = featurize_many([path], cache_dir=tmp_path / f"alone{index}")
        alone[path.name] = _outcome(report, path.name)
    assert alone["a.cif"][0] and not alone["a.cif"][1], "the valid mmCIF is read"
    assert alone["e.pdb"][0] and not alone["e.pdb"][1], "the valid PDB is read"
    assert alone["a.cif"][0] == alone["e.pdb"][0], "the same protein either way"
    assert alone["d_noext.txt"][0] == alone["a.cif"][0], "content sniffing finds the mmCIF"
    assert not alone["c.cif.gz"][0] and "not gzip" in alone["c.cif.gz"][1][0]
    assert not alone["b.pdb"][0] and not alone["f.cif"][0], "a name that lies about the format is refused"
    # all together, in both orders, in one shared cache that already holds every entry:
    # every file gets what it gets alone
    shared = tmp_path / "shared"
    for order in (same_bytes, same_bytes[::-1], same_bytes):
        report = featurize_many([*order], cache_dir=shared)
        for path in same_bytes:
            assert _outcome(report, path.name) == alone[path.name], path.name
    assert report.cache_hits == len(same_bytes)


def _record_position(cache: Path, key: str) -> tuple[Path, int, int]:
    row = GraphCache(cache).lookup(key)
    assert row is not None
    return cache / "shards" / row.shard, row.offset, row.length


def _flip_a_byte(cache: Path, key: str, offset_from_end: int = 100) -> None:
    shard, offset, length = _record_position(cache, key)
    data = bytearray(shard.read_bytes())
    data[offset + length - offset_from_end] ^= 0x01
    shard.write_bytes(bytes(data))


def test_a_damaged_entry_is_a_counted_miss_and_is_rebuilt(tmp_path, structures_dir, capsys):
    source = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    cache = tmp_path / "cache"
    first = featurize_many([source], cache_dir=cache)
    key = first.ok[0]["key"]
    before = GraphCache(cache).load_graph(key)
    _flip_a_byte(cache, key)  # one bit, inside the tensors' bytes: nothing but the checksum notices
    assert GraphCache(cache).load_entry(key) is None
    again = featurize_many([source], cache_dir=cache)
    assert again.cache_hits == 0 and again.cache_damaged == 1
    assert again.to_json()["cache"] == {"hits": 0, "damaged_rebuilt": 1}
    after = GraphCache(cache).load_graph(key)
    assert again.ok == first.ok and torch.equal(after.edge_attr, before.edge_attr), "rebuilt exactly"
    # a training read of a damaged entry names it and the way out
    _flip_a_byte(cache, key)
    with pytest.raises(ProtstepsError, match=r"is damaged in .*run protsteps featurize again"):
        GraphCache(cache).load_graph(key)
    # the CLI says how many it rebuilt
    out = tmp_path / "run"
    assert main(["featurize", str(source), "--out", str(out), "--cache-dir", str(cache)]) == 0
    assert "1 damaged cache entries rebuilt" in capsys.readouterr().out


def test_the_featurizer_code_is_in_the_key(tmp_path, monkeypatch):
    package = tmp_path / "src" / "my_featurizer_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def factory(config, context):\n    return None\n")
    (package / "helpers.py").write_text("SCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    import my_featurizer_pkg

    first = code_fingerprint(my_featurizer_pkg.factory)
    assert code_fingerprint(my_featurizer_pkg.factory) == first
    # an edit to any file of the package (an editable install under development) changes it
    helper = package / "helpers.py"
    helper.write_text("SCALE = 2.0\n")
    stat = helper.stat()
    os.utime(helper, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert code_fingerprint(my_featurizer_pkg.factory) != first
    # the built-in featurizer's identity (hence every cache key) holds it
    spec = FeaturizerSpec.create("residue_graph")
    assert spec.code and f'"code":"{spec.code}"' in spec.identity()


def test_refresh_rebuilds_every_entry(tmp_path, structures_dir):
    source = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    cache = tmp_path / "cache"
    first = featurize_many([source], cache_dir=cache)
    shard, _, _ = _record_position(cache, first.ok[0]["key"])
    shard.write_bytes(b"stale")  # stands for an entry made by other code
    assert featurize_many([source], cache_dir=cache, refresh=True).cache_hits == 0
    assert GraphCache(cache).load_entry(first.ok[0]["key"]) is not None
    out = tmp_path / "run"
    args = ["featurize", str(source), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    assert main([*args, "--refresh"]) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_being_opened(tmp_path, structures_dir):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(structures_dir / "biopython" / "1A8O.cif", folder / "good.cif")
    os.mkfifo(folder / "stream.pdb")
    fifo = tmp_path / "named.pdb"
    os.mkfifo(fifo)
    # in a child process, so that a blocking open fails the test instead of hanging it
    code = textwrap.dedent(
        f"""
        import json
        from protsteps.featurize import featurize_many
        report = featurize_many([{str(folder)!r}, {str(fifo)!r}], cache_dir={str(tmp_path / "cache")!r})
        print(json.dumps(report.to_json()))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = __import__("json").loads(done.stdout)
    assert [Path(r["source"]).name for r in report["ok"]] == ["good.cif"]
    errors = {Path(r["source"]).name: r["error"] for r in report["failed"]}
    assert set(errors) == {"stream.pdb", "named.pdb"}
    assert all(
        "a pipe (FIFO), not a regular file" in e and "save the stream to a file" in e for e in errors.values()
    )


def test_dangling_symlinks_in_folders_are_reported(tmp_path, structures_dir):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(structures_dir / "biopython" / "1A8O.cif", folder / "good.cif")
    (folder / "gone.pdb").symlink_to(tmp_path / "deleted.pdb")
    report = featurize_many([folder], cache_dir=tmp_path / "cache")
    assert [Path(r["source"]).name for r in report.ok] == ["good.cif"]
    assert report.failed == [
        {
            "source": str(folder / "gone.pdb"),
            "error": f"{folder / 'gone.pdb'}: dangling symlink (its target {tmp_path / 'deleted.pdb'} does not exist)",
        }
    ]


def test_unusable_cache_and_output_folders_are_one_line_errors(tmp_path, structures_dir, capsys):
    source = structures_dir / "biopython" / "1A8O.cif"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ProtstepsError, match=r"cache folder .*a_file is a file"):
        featurize_many([source], cache_dir=a_file)
    assert main(["featurize", str(source), "--out", str(tmp_path / "run"), "--cache-dir", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder; pass --cache-dir" in err and "Traceback" not in err
    assert main(["featurize", str(source), "--out", str(a_file), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"--out {a_file} is a file, not a folder" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.pt")), "refused before any work"


def test_records_hold_their_checksum_and_no_pickle(tmp_path, structures_dir):
    report = featurize_many([structures_dir / "biopython" / "1A8O.cif"], cache_dir=tmp_path)
    shard, offset, length = _record_position(tmp_path, report.ok[0]["key"])
    record = shard.read_bytes()[offset : offset + length]
    assert record[:4] == b"PSG1"
    assert GraphCache(tmp_path).lookup(report.ok[0]["key"]).sha256 == hashlib.sha256(record).hexdigest()
    assert b"\x80\x02" not in record[:16] and b"PK" not in record[:4], "raw arrays, not a pickle or zip"


def test_the_size_limit_refuses_without_caching_the_refusal(tmp_path, structures_dir, capsys):
    source = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    size = len(gzip.decompress(source.read_bytes()))
    cache = tmp_path / "cache"
    small = featurize_many([source], cache_dir=cache, max_bytes=size - 1)
    assert small.ok == [] and "decompresses to more than" in small.failed[0]["error"]
    assert "--max-mib" in small.failed[0]["error"]
    # the refusal follows from the limit, not the bytes: a larger limit reads the file
    large = featurize_many([source], cache_dir=cache, max_bytes=size)
    assert len(large.ok) == 2 and large.cache_hits == 0
    bomb = tmp_path / "bomb.pdb.gz"
    bomb.write_bytes(gzip.compress(b"REMARK" + b" " * (3 << 20), 9))
    out = tmp_path / "run"
    assert (
        main(
            [
                "featurize",
                str(bomb),
                str(source),
                "--out",
                str(out),
                "--cache-dir",
                str(cache),
                "--max-mib",
                "2",
            ]
        )
        == 0
    )
    assert "decompresses to more than 2 MiB" in capsys.readouterr().out
