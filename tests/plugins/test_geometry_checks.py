"""Geometry sanity at featurize time: real structures copied and mutated in a temp folder
(a far-away coordinate, every atom at one point, a squashed chain) are refused per chain
with the reason in the report; training never sees them."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest

import protsteps
from protsteps.cli import main
from protsteps.errors import ConfigError, StructureError
from protsteps.featurize import FeaturizerSpec, featurize_many

PDB = "masif/1BRS_A.pdb.gz"
CIF = "biopython/1A8O.cif"


def mutate_pdb(source: Path, target: Path, coordinates) -> Path:
    """``source`` with every ATOM/HETATM record's x, y, z replaced by ``coordinates(x, y, z)``."""
    lines = []
    for line in gzip.open(source, "rt").read().splitlines():
        if line.startswith(("ATOM  ", "HETATM")):
            x, y, z = (float(line[c : c + 8]) for c in (30, 38, 46))
            x, y, z = coordinates(x, y, z)
            line = f"{line[:30]}{x:8.3f}{y:8.3f}{z:8.3f}{line[54:]}"
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    return target


def mutate_cif_ca(source: Path, target: Path, value: str) -> Path:
    """``source`` with Cartn_x of the first CA atom set to ``value``."""
    lines = source.read_text().splitlines()
    columns = [line.split()[0] for line in lines if line.startswith("_atom_site.")]
    atom, x = columns.index("_atom_site.label_atom_id"), columns.index("_atom_site.Cartn_x")
    for number, line in enumerate(lines):
        tokens = line.split()
        if tokens and tokens[0] == "ATOM" and tokens[atom] == "CA":
            tokens[x] = value
            lines[number] = " ".join(tokens)
            break
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture(scope="module")
def bad_files(structures_dir: Path, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    return {
        "far": mutate_cif_ca(structures_dir / CIF, folder / "far.cif", "50000.000"),
        "collapsed": mutate_pdb(
            structures_dir / PDB, folder / "collapsed.pdb", lambda x, y, z: (1.0, 2.0, 3.0)
        ),
        "squashed": mutate_pdb(
            structures_dir / PDB, folder / "squashed.pdb", lambda x, y, z: (0.2 * x, 0.2 * y, 0.2 * z)
        ),
    }


REASONS = {
    "far": r"coordinate 50000 Å at residue \w+ \d+ is beyond max_coordinate = 10000 Å",
    "collapsed": r"all \d+ CA atoms lie within 0 Å of their centroid, below min_ca_spread = 1 Å",
    "squashed": r"\d+ of \d+ consecutive CA-CA distances are below min_ca_ca = 1 Å",
}
OFF = {"far": {"max_coordinate": 0}, "collapsed": {"min_ca_spread": 0}, "squashed": {"min_ca_ca": 0}}


@pytest.mark.parametrize("case", sorted(REASONS))
def test_each_bad_geometry_is_refused_with_its_reason_and_a_setting_accepts_it(bad_files, case):
    with pytest.raises(StructureError, match=rf"{bad_files[case].name}: chain \w+: {REASONS[case]}"):
        protsteps.featurize(bad_files[case])
    settings = dict(OFF[case])
    if case == "collapsed":
        settings["min_ca_ca"] = 0  # all at one point is squashed too
    assert protsteps.featurize(bad_files[case], **settings)


def test_the_untouched_files_pass(structures_dir):
    assert protsteps.featurize(structures_dir / PDB) and protsteps.featurize(structures_dir / CIF)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_coordinate": -1.0}, "max_coordinate = -1.0 is out of range: it must be >= 0"),
        ({"max_coordinate": float("inf")}, r"max_coordinate = inf must be a finite number \(0: off\)"),
        ({"min_ca_spread": float("nan")}, "min_ca_spread = nan is not a number"),
        ({"max_close_fraction": 1.5}, "max_close_fraction = 1.5 is out of range: it must be >= 0 and <= 1"),
    ],
)
def test_bad_check_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        protsteps.build("featurizer", "residue_graph", **settings)


def test_the_report_names_each_refusal_and_the_cache_key_follows_the_settings(bad_files, tmp_path):
    cache = tmp_path / "cache"
    # featurized with the checks off first: those entries must not be served with them on
    off = featurize_many(
        list(bad_files.values()),
        config={"max_coordinate": 0, "min_ca_spread": 0, "min_ca_ca": 0},
        cache_dir=cache,
    )
    assert len(off.ok) == 3 and not off.failed
    report = featurize_many([*bad_files.values(), bad_files["far"]], cache_dir=cache)
    assert report.ok == [] and report.cache_hits == 0
    report.write(tmp_path / "report.json")
    failed = json.loads((tmp_path / "report.json").read_text())["failed"]
    assert [Path(row["source"]).stem for row in failed] == ["far", "collapsed", "squashed"]
    for row, case in zip(failed, ["far", "collapsed", "squashed"], strict=True):
        assert re.search(REASONS[case], row["error"]), row
    # the refusals are cached too, and a second run serves them as they were
    again = featurize_many(list(bad_files.values()), cache_dir=cache)
    assert again.cache_hits == 3 and again.failed == report.failed
    identities = {
        FeaturizerSpec.create("residue_graph", settings).identity()
        for settings in (
            {},
            {"max_coordinate": 0},
            {"min_ca_spread": 0},
            {"min_ca_ca": 0},
            {"max_close_fraction": 1},
        )
    }
    assert len(identities) == 5


@pytest.mark.slow
def test_pretrain_on_a_folder_with_a_bad_file_finishes_and_reports_it(
    small_structures, bad_files, tmp_path, capsys
):
    data = tmp_path / "data"
    data.mkdir()
    for path in small_structures:
        shutil.copy(path, data / path.name)
    shutil.copy(bad_files["collapsed"], data / "collapsed.pdb")
    run = tmp_path / "run"
    args = ["pretrain", str(data), "--out", str(run), "--cache-dir", str(tmp_path / "cache")]
    args += ["--teacher", "none", "--epochs", "1", "--batch-size", "2", "-q"]
    args += ["--set", "encoder.hidden_dim=16", "--set", "tasks.distance.num_pairs=16"]
    assert main(args) == 0
    assert "1 input could not be used" in capsys.readouterr().err
    failed = json.loads((run / "featurize-report.json").read_text())["failed"]
    assert len(failed) == 1 and "collapsed.pdb: chain" in failed[0]["error"]
    assert "min_ca_spread" in failed[0]["error"]


def _overflowing_run(small_structures, structures_dir, tmp_path) -> list[str]:
    """pretrain arguments for three good chains and one with a CA at 3e38, the coordinate
    bound switched off."""
    data = tmp_path / "data"
    data.mkdir()
    for path in small_structures[:3]:
        shutil.copy(path, data / path.name)
    mutate_cif_ca(structures_dir / CIF, data / "huge.cif", "3.0e38")
    return [
        str(data),
        *("--cache-dir", str(tmp_path / "cache"), "--teacher", "none", "--epochs", "1"),
        *("--batch-size", "4", "-q", "--set", "encoder.hidden_dim=16"),
        *("--set", "featurizer.max_coordinate=0"),
    ]


@pytest.mark.slow
def test_a_chain_that_overflows_a_distance_is_a_non_finite_loss_not_a_crash(
    small_structures, structures_dir, tmp_path, capsys
):
    """With the coordinate bound switched off, a coordinate of 3e38 overflows a distance:
    the distance task refuses it naming the chain, and ``nonfinite`` decides."""
    common = _overflowing_run(small_structures, structures_dir, tmp_path)
    common += ["--set", "train.valid_fraction=0", "--set", "tasks.distance.num_pairs=0"]
    assert main(["pretrain", *common, "--out", str(tmp_path / "stop")]) == 1
    err = capsys.readouterr().err
    assert "stopped at step" in err and "task 'distance': non-finite CA-CA distance" in err
    assert "huge.cif:" in err and "Traceback" not in err
    assert main(["pretrain", *common, "--out", str(tmp_path / "skip"), "--set", "train.nonfinite=skip"]) == 0
    assert "1 batch skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_a_validation_chain_that_overflows_a_distance_follows_nonfinite_too(
    small_structures, structures_dir, tmp_path, capsys
):
    common = _overflowing_run(small_structures, structures_dir, tmp_path)
    # seed 0 puts huge.cif, one of 4 files, in the validation set
    common += ["--set", "train.valid_fraction=0.25", "--set", "tasks.distance.num_pairs=0"]
    assert main(["pretrain", *common, "--out", str(tmp_path / "stop")]) == 1
    err = capsys.readouterr().err
    assert "validation: task 'distance': non-finite CA-CA distance" in err and "huge.cif:" in err
    assert "Traceback" not in err
    run = tmp_path / "skip"
    assert main(["pretrain", *common, "--out", str(run), "--set", "train.nonfinite=skip"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (valid,) = [r for r in records if r["split"] == "valid"]
    assert valid["skipped_batches"] == 1 and valid["loss"] is None and valid["nonfinite"] == ["loss"]
    assert all(r["skipped_batches"] == 0 for r in records if r["split"] == "train")
