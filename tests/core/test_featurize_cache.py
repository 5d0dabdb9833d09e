"""featurize_many, the content-addressed cache, report.json and `protsteps featurize`."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch

import protsteps
from protsteps.cli import main
from protsteps.featurize import GraphCache, default_cache_dir, featurize_many
from protsteps.graph import ProteinGraph

GOOD = ("masif/1A2K_AB.pdb.gz", "biopython/1A8O.cif", "mdanalysis/5PTI.cif.gz")


def atom_line(serial, name, resname, resseq, xyz, record="ATOM"):
    x, y, z = xyz
    return f"{record:<6}{serial:>5}  {name:<3} {resname:>3} A{resseq:>4}    {x:>8}{y:>8}{z:>8}  1.00 20.00\n"


@pytest.fixture()
def inputs(tmp_path, structures_dir) -> Path:
    """A folder of good structures and every kind of bad file a user has."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    for relative in GOOD:
        shutil.copy(structures_dir / relative, folder / Path(relative).name)
    good = (structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes()
    (folder / "truncated.pdb.gz").write_bytes(good[: len(good) // 3])
    text = gzip.decompress(good)
    (folder / "cut_mid_line.pdb").write_bytes(text[: len(text) // 2 + 17])
    (folder / "empty.pdb").write_bytes(b"")
    (folder / "binary.cif").write_bytes(bytes(range(256)) * 16)
    rna = "".join(atom_line(i + 1, "P", "U", i + 1, (f"{6.0 * i:.3f}", "0.000", "0.000")) for i in range(5))
    (folder / "rna_only.pdb").write_text(rna)
    ligand = "".join(
        atom_line(i + 1, f"C{i}", "HEM", 1, (f"{1.4 * i:.3f}", "0.000", "0.000"), "HETATM") for i in range(6)
    )
    (folder / "ligand_only.pdb").write_text(ligand)
    no_ca = "".join(
        atom_line(3 * r + k + 1, name, "ALA", r + 1, (f"{3.8 * r + k:.3f}", "0.000", "0.000"))
        for r in range(4)
        for k, name in enumerate(("N", "C", "O"))
    )
    (folder / "no_ca.pdb").write_text(no_ca)
    nan = text.decode().replace("  27.705   5.368  64.017", "     nan   5.368  64.017", 1)
    assert nan != text.decode()
    (folder / "nan_coordinates.pdb").write_text(nan)
    return folder


def rows_by_file(report):
    out: dict[str, list] = {}
    for row in report.ok:
        out.setdefault(Path(row["source"]).name, []).append(("ok", row))
    for row in report.failed:
        out.setdefault(Path(row["source"]).name, []).append(("failed", row["error"]))
    return out


def test_every_input_is_reported_with_a_reason(inputs, tmp_path):
    report = featurize_many([inputs, tmp_path / "missing.pdb"], cache_dir=tmp_path / "cache")
    rows = rows_by_file(report)
    assert set(rows) == {p.name for p in inputs.iterdir()} | {"missing.pdb"}
    reasons = {name: [r for status, r in entries if status == "failed"] for name, entries in rows.items()}
    expected = {
        "truncated.pdb.gz": "truncated gzip",
        "cut_mid_line.pdb": "truncated file",
        "empty.pdb": "empty file",
        "binary.cif": "binary content",
        "rna_only.pdb": "not a protein",
        "ligand_only.pdb": "not a protein",
        "no_ca.pdb": "no amino-acid residue with a CA atom",
        "nan_coordinates.pdb": "non-finite",
        "missing.pdb": "no such file",
    }
    for name, words in expected.items():
        assert len(reasons[name]) == 1 and words in reasons[name][0], (name, reasons[name])
        assert name in reasons[name][0], "the reason names the file"
    # NaN only spoils chain A of that file; chain B is fine
    assert [row["chain"] for status, row in rows["nan_coordinates.pdb"] if status == "ok"] == ["B"]
    assert "chain A" in reasons["nan_coordinates.pdb"][0]
    ok = {(Path(r["source"]).name, r["chain"]): r["residues"] for r in report.ok}
    assert ok[("1A2K_AB.pdb.gz", "A")] == 124 and ok[("1A8O.cif", "A")] == 70
    assert all(set(r) == {"source", "chain", "residues", "key"} for r in report.ok)
    assert all(set(r) == {"source", "error"} for r in report.failed)


def test_second_run_is_all_cache_hits_and_config_changes_make_new_entries(inputs, tmp_path):
    cache = tmp_path / "cache"
    first = featurize_many([inputs], cache_dir=cache)
    assert first.cache_hits == 0
    entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
    second = featurize_many([inputs], cache_dir=cache)
    assert second.cache_hits == second.files == first.files
    assert second.to_json()["cache"] == {"hits": first.files, "damaged_rebuilt": 0}
    assert {k: v for k, v in second.to_json().items() if k != "cache"} == {
        k: v for k, v in first.to_json().items() if k != "cache"
    }
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == entries, "a rerun writes nothing"
    assert not list(cache.rglob("*.tmp")), "committed shards leave no temporary files"
    changed = featurize_many([inputs], config={"radius": 8.0}, cache_dir=cache)
    assert changed.cache_hits == 0
    assert not {r["key"] for r in changed.ok} & {r["key"] for r in first.ok}
    assert changed.to_json()["featurizer"]["config"]["radius"] == 8.0


def test_cache_entries_load_with_weights_only(tmp_path, structures_dir):
    path = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    report = featurize_many([path], cache_dir=tmp_path, config={"knn": 4, "rbf": 4})
    direct = protsteps.featurize(path, knn=4, rbf=4)
    for row, graph in zip(report.ok, direct, strict=True):
        entry = GraphCache(tmp_path).load_entry(row["key"])  # checked, no pickle
        assert entry is not None
        (data,) = [c["graph"] for c in entry["chains"] if c["chain"] == row["chain"]]
        cached = ProteinGraph.from_dict(data)
        assert cached.chain_id == row["chain"] == graph.chain_id
        for name in ("pos", "edge_index", "dihedrals", "dihedral_mask", "edge_attr", "backbone"):
            assert torch.equal(getattr(cached, name), getattr(graph, name)), name


def test_content_addressed_across_names_and_recovers_from_a_damaged_index(tmp_path, structures_dir):
    source = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    one, two = tmp_path / "one.pdb.gz", tmp_path / "two.pdb.gz"
    shutil.copy(source, one)
    shutil.copy(source, two)
    cache = tmp_path / "cache"
    first = featurize_many([one], cache_dir=cache)
    second = featurize_many([two], cache_dir=cache)
    assert second.cache_hits == 1
    assert [r["key"] for r in second.ok] == [r["key"] for r in first.ok]
    assert {r["source"] for r in second.ok} == {str(two)}
    # chain selection is part of the key
    selected = featurize_many([f"{one}:B"], cache_dir=cache)
    assert selected.cache_hits == 0 and [r["chain"] for r in selected.ok] == ["B"]
    # an entry deleted or damaged behind the cache's back is rebuilt, not reported as a hit
    row = GraphCache(cache).lookup(first.ok[0]["key"])
    (cache / "shards" / row.shard).unlink()
    again = featurize_many([one], cache_dir=cache)
    assert again.cache_hits == 0 and len(again.ok) == 2
    row = GraphCache(cache).lookup(first.ok[0]["key"])
    (cache / "shards" / row.shard).write_bytes(b"half a zip")
    again = featurize_many([one], cache_dir=cache)
    assert again.cache_hits == 0 and len(again.ok) == 2
    assert featurize_many([one], cache_dir=cache).cache_hits == 1
    # failures are cached with the file's bytes, and reported under the new name
    bad1, bad2 = tmp_path / "bad1.pdb", tmp_path / "bad2.pdb"
    bad1.write_bytes(b"")
    bad2.write_bytes(b"")
    featurize_many([bad1], cache_dir=cache)
    rerun = featurize_many([bad2], cache_dir=cache)
    assert rerun.cache_hits == 1 and rerun.failed == [{"source": str(bad2), "error": f"{bad2}: empty file"}]


def test_list_files_and_chain_selections(tmp_path, structures_dir):
    listing = tmp_path / "inputs.txt"
    listing.write_text(
        "# training structures\n"
        f"{structures_dir / 'masif' / '1A2K_AB.pdb.gz'}:B\n"
        "\n"
        f"{structures_dir / 'biopython' / '1A8O.cif'}\n"
        "nowhere.pdb\n"
    )
    report = featurize_many([listing], cache_dir=tmp_path / "cache")
    assert [(Path(r["source"]).name, r["chain"]) for r in report.ok] == [
        ("1A2K_AB.pdb.gz:B", "B"),
        ("1A8O.cif", "A"),
    ]
    assert len(report.failed) == 1 and "no such file" in report.failed[0]["error"]
    # paths in a list may also be relative to the list's folder
    (tmp_path / "sub").mkdir()
    shutil.copy(structures_dir / "biopython" / "1A8O.cif", tmp_path / "sub" / "x.cif")
    (tmp_path / "rel.txt").write_text("sub/x.cif\n")
    assert [r["source"] for r in featurize_many([tmp_path / "rel.txt"], cache_dir=tmp_path / "c2").ok] == [
        str(tmp_path / "sub" / "x.cif")
    ]


def test_one_file_named_several_ways_is_used_once(tmp_path, structures_dir, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "lists").mkdir()
    shutil.copy(structures_dir / "biopython" / "1A8O.cif", tmp_path / "in" / "a.cif")
    (tmp_path / "lists" / "list.txt").write_text("../in/a.cif\n")
    (tmp_path / "link.cif").symlink_to(tmp_path / "in" / "a.cif")
    monkeypatch.chdir(tmp_path)
    spellings = ["lists/list.txt", "in/a.cif", "./in/a.cif", str(tmp_path / "in" / "a.cif"), "link.cif", "in"]
    report = featurize_many(spellings, cache_dir=tmp_path / "cache")
    # the list's entry comes first, its "lists/../" folded away; every other spelling is the same file
    assert [(r["source"], r["chain"]) for r in report.ok] == [("in/a.cif", "A")]
    assert report.failed == []
    # a chain selection of the file is a different input
    report = featurize_many(["in/a.cif", "in/a.cif:A"], cache_dir=tmp_path / "cache")
    assert [r["source"] for r in report.ok] == ["in/a.cif", "in/a.cif:A"]


def test_awkward_shared_files_never_crash_the_run(tmp_path, structures_dir):
    folder = structures_dir / "mdanalysis"
    report = featurize_many([folder], cache_dir=tmp_path / "cache")
    files = sorted(str(p) for p in folder.iterdir())
    seen = {r["source"] for r in report.ok} | {r["source"] for r in report.failed}
    assert seen == set(files)
    assert len({r["source"] for r in report.ok}) > 90
    for row in report.failed:
        assert row["error"].startswith(row["source"]) and "unexpected error" not in row["error"]


def test_worker_processes_give_the_same_report(tmp_path, structures_dir):
    paths = [structures_dir / relative for relative in GOOD]
    one = featurize_many(paths, cache_dir=tmp_path / "a", workers=1)
    two = featurize_many(paths, cache_dir=tmp_path / "b", workers=2)
    assert two.to_json() == one.to_json()


def test_default_cache_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "protsteps" / "graphs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "protsteps" / "graphs"


def test_cli_writes_report_and_exit_codes(inputs, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["featurize", str(inputs), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--set", "radius=6.5", "--set", "featurizer.knn=3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"featurizer", "cache", "ok", "failed"}
    assert report["featurizer"]["name"] == "residue_graph"
    assert report["featurizer"]["config"]["radius"] == 6.5 and report["featurizer"]["config"]["knn"] == 3
    assert len(report["failed"]) == 8
    printed = capsys.readouterr().out
    assert "failed" in printed and "report" in printed

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.pdb").write_bytes(b"")
    capsys.readouterr()
    assert (
        main(["featurize", str(bad), "--out", str(tmp_path / "run2"), "--cache-dir", str(tmp_path / "c")])
        == 2
    )
    err = capsys.readouterr().err
    assert "nothing could be featurized" in err and "empty file" in err
    assert json.loads((tmp_path / "run2" / "report.json").read_text())["ok"] == []
    assert main([*args, "--set", "radios=3"]) == 2
    assert "did you mean 'radius'" in capsys.readouterr().err


@pytest.mark.parametrize("chunk", [1, 3])
def test_a_worker_that_dies_fails_its_file_only(chunk):
    """Also when files go to workers a few per task: the others of the dead worker's task
    are retried and succeed."""
    from protsteps.featurize import run_in_processes
    from tests.core.featurize_workers import die_on_poison, no_setup

    items = ["a", "b", "poison", "c", "d", "e", "f", "g"]
    results = []
    run_in_processes(items, die_on_poison, no_setup, (), 2, results.append, chunk)
    by_item = {r.source: r for r in results}
    assert sorted(by_item) == sorted(items) and len(results) == len(items)
    assert "worker process died" in by_item["poison"].errors[0]
    assert all(by_item[i].ok and not by_item[i].errors for i in items if i != "poison")
