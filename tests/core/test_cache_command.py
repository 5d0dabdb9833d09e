"""``protsteps cache`` and :mod:`protsteps.legacy_cache`: the per-file cache of earlier
versions (``ab/<key>.pt``) is found, read without trusting it, and its sources featurized
into the graph store with today's code, never re-keyed (issue 17)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

import protsteps
from protsteps import legacy_cache
from protsteps.cli import main
from protsteps.errors import RunFailure
from protsteps.legacy_cache import legacy_files, legacy_note, read_legacy, scan_legacy
from protsteps.store import GraphStore

#: small real structures: three written as format-2 entries, one as format 1
MASIF = ("1BRS_A.pdb.gz", "1BRS_D.pdb.gz", "1I07_A.pdb.gz")
FORMAT_1 = "1LQM_F.pdb.gz"
GONE = "1NPO_A.pdb.gz"


def write_legacy(root: Path, source: str, graphs, errors=(), layout: int = 2, key: str = "") -> Path:
    """A cache entry exactly as protsteps wrote it before the graph store (``GraphCache.
    store_entry`` of commit e4acefd^ for format 2, of adbca6c^ for format 1)."""
    entry = {
        "format": layout,
        "source": source,
        "chains": [{"chain": g.chain_id, "residues": g.num_nodes, "graph": g.to_dict()} for g in graphs],
        "errors": list(errors),
    }
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    payload = buffer.getvalue()
    if layout == 2:
        blob = b"protsteps-graphs-2\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    else:
        blob = payload
    key = key or hashlib.sha256(f"{layout}:{source}".encode()).hexdigest()
    path = root / key[:2] / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


@pytest.fixture()
def legacy(tmp_path, structures_dir):
    """A cache folder holding six legacy entries: three masif files (format 2), one more
    (format 1), one whose source was deleted since, and one damaged; and the inputs."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cache = tmp_path / "cache"
    sources = []
    for name in (*MASIF, FORMAT_1, GONE):
        path = inputs / name
        shutil.copy(structures_dir / "masif" / name, path)
        sources.append(path)
    for path in sources[:3]:
        write_legacy(cache, str(path), protsteps.featurize(path))
    write_legacy(cache, str(sources[3]), protsteps.featurize(sources[3]), layout=1)
    write_legacy(cache, str(sources[4]), protsteps.featurize(sources[4]))
    sources[4].unlink()
    damaged = write_legacy(cache, str(sources[0]) + ".copy", protsteps.featurize(sources[0]))
    blob = bytearray(damaged.read_bytes())
    blob[-100] ^= 0x01  # a bit flip in the payload
    damaged.write_bytes(bytes(blob))
    return {"cache": cache, "inputs": inputs, "existing": sources[:4], "gone": sources[4], "damaged": damaged}


def test_entries_are_found_and_read_without_trusting_them(legacy, tmp_path):
    cache = legacy["cache"]
    files = list(legacy_files(cache))
    assert len(files) == 6 and all(f.path.parent.name == f.path.name[:2] for f in files)
    entries = {str(e.path): e for e in (read_legacy(f.path) for f in files)}
    good = [e for e in entries.values() if not e.damaged]
    assert sorted(e.format for e in good) == [1, 2, 2, 2, 2]
    first = next(e for e in good if e.source == str(legacy["existing"][0]))
    assert first.chains == [(g.chain_id, g.num_nodes) for g in protsteps.featurize(legacy["existing"][0])]
    assert first.errors == [] and first.size == first.path.stat().st_size
    assert "SHA-256" in entries[str(legacy["damaged"])].damaged

    # whatever a file holds, a reason and never an exception
    odd = tmp_path / "odd"
    key = "ab" + "0" * 62
    cases = {
        b"": "empty",
        b"protsteps-graphs-2\nshort": "header",
        b"hello": "not a protsteps cache entry",
        b"PK\x03\x04 not really a zip": "cannot be loaded",
    }
    for blob, reason in cases.items():
        path = odd / key[:2] / f"{key}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        assert reason in (read_legacy(path).damaged or ""), blob
    buffer = io.BytesIO()
    torch.save({"format": 2, "chains": []}, buffer)  # no source
    payload = buffer.getvalue()
    path.write_bytes(b"protsteps-graphs-2\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    assert "names no source" in read_legacy(path).damaged
    assert read_legacy(odd / "missing.pt").damaged.startswith("cannot be read")
    # names that are not entries are left alone
    (cache / "ab").mkdir(exist_ok=True)
    (cache / "ab" / "notes.pt").write_bytes(b"x")
    (cache / "zz").mkdir()
    (cache / "zz" / ("zz" + "0" * 62 + ".pt")).write_bytes(b"x")
    assert len(list(legacy_files(cache))) == 6


def test_the_note_is_one_bounded_line(legacy, monkeypatch):
    cache = legacy["cache"]
    scan = scan_legacy(cache)
    assert scan.count == 6 and scan.complete and scan.bytes == sum(f.size for f in legacy_files(cache))
    note = legacy_note(cache)
    assert note is not None and "\n" not in note
    assert "holds 6 entries" in note and "protsteps cache migrate --cache-dir" in note
    monkeypatch.setattr(legacy_cache, "NOTE_LIMIT", 2)
    assert "more than 2 entries" in legacy_note(cache)
    assert legacy_note(cache / "shards") is None and legacy_note(cache / "absent") is None


def test_info_migrate_and_remove(legacy, tmp_path, capsys, monkeypatch):
    cache = legacy["cache"]
    names = [str(p) for p in legacy["existing"]]

    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "graph store: none yet" in out
    assert "per-file entries of earlier versions: 6 (" in out and "not used by this version" in out

    # featurize says, in one line on stderr, that the old entries are there and what to do
    assert main(["featurize", names[0], "--out", str(tmp_path / "f0"), "--cache-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    note = [line for line in captured.err.splitlines() if "per-file cache" in line]
    assert len(note) == 1 and "protsteps cache migrate" in note[0] and "note:" not in captured.out

    # a setting that does not exist is refused before any work
    assert main(["cache", "migrate", "--cache-dir", str(cache), "--set", "radios=3"]) == 2
    assert not (cache / "legacy-migrate").exists()

    # --remove-legacy deletes nothing when the featurize does not finish
    def fails(*args, **kwargs):
        raise RunFailure("disk full")

    with monkeypatch.context() as patch:
        patch.setattr("protsteps.cli._cache.run_featurize", fails)
        assert main(["cache", "migrate", "--cache-dir", str(cache), "--remove-legacy"]) == 1
    assert len(list(legacy_files(cache))) == 6
    capsys.readouterr()

    assert main(["cache", "migrate", "--cache-dir", str(cache)]) == 0
    captured = capsys.readouterr()
    folder = cache / "legacy-migrate"
    listed = [line for line in (folder / "sources.txt").read_text().splitlines() if not line.startswith("#")]
    assert sorted(listed) == sorted(names)
    assert str(legacy["gone"]) in (folder / "missing.txt").read_text()
    assert legacy["damaged"].name in (folder / "damaged.txt").read_text()
    assert "4 sources to featurize, 1 missing, 1 damaged" in captured.out
    assert "3 sources featurized, 1 already there" in captured.out  # names[0]: by featurize above
    assert "sources of old entries not found: 1" in captured.err and "1 damaged entry" in captured.err
    assert json.loads((folder / "report.json").read_text())["failed"] == []
    assert len(list(legacy_files(cache))) == 6  # kept without --remove-legacy
    store = GraphStore(cache)
    records = store.counts()
    store.close()
    assert records[0] == 4

    # today's featurize of those files: all from the store
    assert main(["featurize", *names, "--out", str(tmp_path / "f1"), "--cache-dir", str(cache)]) == 0
    assert "(4 from the cache)" in capsys.readouterr().out

    # a second migrate reads no entry and featurizes nothing
    with monkeypatch.context() as patch:
        patch.setattr(legacy_cache, "read_legacy", lambda path: pytest.fail(f"read {path} again"))
        assert main(["cache", "migrate", "--cache-dir", str(cache)]) == 0
    assert "0 sources featurized, 4 already there" in capsys.readouterr().out
    store = GraphStore(cache)
    assert store.counts() == records
    store.close()

    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "graph store: 4 records (4 chains, 0 inputs that failed), 2 shards" in out  # two featurize runs

    assert main(["cache", "migrate", "--cache-dir", str(cache), "--remove-legacy"]) == 0
    out = capsys.readouterr().out
    assert "removed 6 per-file cache entries" in out
    assert not list(legacy_files(cache))
    assert not [p for p in cache.iterdir() if len(p.name) == 2]  # the emptied ab/ folders too
    assert (folder / "missing.txt").is_file()  # the lists stay
    assert all(Path(n).is_file() for n in names)  # the structures are untouched

    assert main(["cache", "migrate", "--cache-dir", str(cache)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert "per-file entries of earlier versions: none" in capsys.readouterr().out
    assert main(["featurize", *names, "--out", str(tmp_path / "f2"), "--cache-dir", str(cache)]) == 0
    assert "per-file cache" not in capsys.readouterr().err
