"""Manifests: reading, paths, splits, multi-label cells, skipped rows, error messages."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from protsteps.downstream import LabelledSet, ManifestError, read_manifest, stratified_split
from protsteps.downstream._labels import normalize_split, rarest_label


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two (empty) structure files beside a manifest folder, one absolute elsewhere."""
    for name in ("data/s/a.pdb", "data/s/b.cif.gz", "elsewhere/c.pdb"):
        write(tmp_path / name, "ATOM\n")
    return tmp_path


def test_tsv_paths_are_relative_to_the_manifest_and_splits_normalised(folder: Path):
    absolute = folder / "elsewhere" / "c.pdb"
    manifest = write(
        folder / "data" / "labels.tsv",
        "path\tchain\tlabel\tsplit\n"
        "s/a.pdb\tA\tkinase\ttraining\n"
        "s/b.cif.gz\t\tprotease\tValidation\n"
        f"{absolute}\tB\tkinase\ttesting\n",
    )
    data = read_manifest(manifest)
    assert [Path(r.path) for r in data.rows] == [
        folder / "data" / "s" / "a.pdb",
        folder / "data" / "s" / "b.cif.gz",
        absolute,
    ]
    assert [r.chain for r in data.rows] == ["A", None, "B"]
    assert [r.split for r in data.rows] == ["train", "valid", "test"]
    assert [r.labels for r in data.rows] == [("kinase",), ("protease",), ("kinase",)]
    assert data.rows[0].spec == f"{folder / 'data' / 's' / 'a.pdb'}:A"
    assert data.rows[1].spec == str(folder / "data" / "s" / "b.cif.gz")
    assert [r.origin for r in data.rows] == ["labels.tsv:2", "labels.tsv:3", "labels.tsv:4"]
    assert data.classes() == ["kinase", "protease"] and not data.multi_label and not data.skipped


def test_csv_with_a_named_label_column_multi_labels_and_no_split(folder: Path):
    manifest = write(
        folder / "data" / "labels.csv",
        'path,ec,other\ns/a.pdb,"1.1.1.1; 2.7.11.1",x\ns/b.cif.gz,2.7.11.1,y\n',
    )
    data = read_manifest(manifest, label_column="ec")
    assert [r.labels for r in data.rows] == [("1.1.1.1", "2.7.11.1"), ("2.7.11.1",)]
    assert data.multi_label and all(r.split is None for r in data.rows)
    whole = read_manifest(manifest, label_column="ec", label_separator="")
    assert whole.rows[0].labels == ("1.1.1.1; 2.7.11.1",)


def test_the_delimiter_is_sniffed_when_the_extension_does_not_say(folder: Path):
    manifest = write(folder / "data" / "labels.txt", "path\tlabel\n# a comment\n\ns/a.pdb\tx\n")
    data = read_manifest(manifest)
    assert [r.labels for r in data.rows] == [("x",)]


def test_missing_files_and_empty_labels_are_skipped_with_reasons(folder: Path):
    manifest = write(
        folder / "data" / "labels.tsv",
        "path\tlabel\ns/a.pdb\tx\ns/missing.pdb\ty\ns/b.cif.gz\t\n\tz\n",
    )
    data = read_manifest(manifest)
    assert [r.origin for r in data.rows] == ["labels.tsv:2"]
    reasons = {s.origin: s.reason for s in data.skipped}
    assert reasons["labels.tsv:3"].startswith("structure file not found:")
    assert "missing.pdb" in reasons["labels.tsv:3"]
    assert reasons["labels.tsv:4"] == "no label in column 'label'"
    assert reasons["labels.tsv:5"] == "no path"


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("path\tlabl\ns/a.pdb\tx\n", {}, "no column 'label' (did you mean 'labl'?); columns: path, labl"),
        ("file\tlabel\ns/a.pdb\tx\n", {}, "no column 'path'"),
        ("path\tlabel\tsplit\ns/a.pdb\tx\tholdout\n", {}, "labels.tsv:2: split 'holdout' is not one of"),
        ("path\tlabel\ns/a.pdb\tx\n", {"split_column": "fold"}, "no column 'fold'"),
        ("path\tlabel\ns/a.pdb\tx\n", {"group_column": "family"}, "no column 'family'"),
        ("path\tlabel\ns/a.pdb\tx\textra\n", {}, "labels.tsv:2: 3 cells but the header has 2 columns"),
        ("path\tlabel\tlabel\ns/a.pdb\tx\ty\n", {}, "column 'label' appears twice"),
        ("", {}, "is empty (a header row is required)"),
        (
            "path\tlabel\tsplit\ns/a.pdb\tx\ttrain\ns/b.cif.gz\ty\t\n",
            {},
            "labels.tsv:3: no value in column 'split', while other rows have one",
        ),
    ],
)
def test_bad_manifests_are_errors_naming_the_file(folder: Path, text: str, kwargs: dict, message: str):
    manifest = write(folder / "data" / "labels.tsv", text)
    with pytest.raises(ManifestError) as error:
        read_manifest(manifest, **kwargs)
    assert message in str(error.value)
    assert "labels.tsv" in str(error.value)


def test_a_missing_manifest_is_one_clear_error(tmp_path: Path):
    with pytest.raises(ManifestError, match=r"label file .*nope.tsv does not exist"):
        read_manifest(tmp_path / "nope.tsv")


def test_split_spellings():
    assert [normalize_split(s, "x") for s in ("TRAIN", "val", "dev", "Validation", "te", "Testing")] == [
        "train",
        "valid",
        "valid",
        "valid",
        "test",
        "test",
    ]


def test_write_gives_a_manifest_that_reads_back_the_same(folder: Path):
    manifest = write(
        folder / "data" / "labels.tsv",
        "path\tchain\tlabel\tsplit\ts/a.pdb\tA\tx;y\ttrain\ns/b.cif.gz\t\tz\ttest\n".replace(
            "\ts/a", "\ns/a"
        ),
    )
    data = read_manifest(manifest)
    copy = folder / "other" / "copy.tsv"
    data.write(copy)
    again = read_manifest(copy)
    assert [(r.path, r.chain, r.labels, r.split) for r in again.rows] == [
        (r.path, r.chain, r.labels, r.split) for r in data.rows
    ]
    assert os.path.isabs(again.rows[0].path)
    assert isinstance(again, LabelledSet)


# ---------------------------------------------------------------------------- splits


def test_a_drawn_split_is_exact_stratified_and_repeatable():
    strata = [c for c in "ABCD" for _ in range(25)]
    first = stratified_split(strata, (0.8, 0.1, 0.1), seed=3)
    assert first == stratified_split(strata, (0.8, 0.1, 0.1), seed=3)
    assert first != stratified_split(strata, (0.8, 0.1, 0.1), seed=4)
    counts = collections.Counter(first)
    assert counts == {"train": 80, "valid": 10, "test": 10}
    for stratum in "ABCD":
        per = collections.Counter(s for s, c in zip(first, strata, strict=True) if c == stratum)
        assert per["train"] == 20 and {per["valid"], per["test"]} <= {2, 3}


def test_small_strata_keep_a_training_example_and_shares_are_met_overall():
    # 10 rows: a class of 7, a class of 2 and a singleton; 60/20/20 asks for 2 valid and 2 test
    strata = ["big"] * 7 + ["pair"] * 2 + ["single"]
    splits = stratified_split(strata, (0.6, 0.2, 0.2), seed=0)
    assert collections.Counter(splits) == {"train": 6, "valid": 2, "test": 2}
    assert splits[-1] == "train"  # the only example of its class is never held out
    assert "train" in splits[7:9]


def test_groups_stay_in_one_split():
    strata = ["x"] * 12 + ["y"] * 12
    groups = [f"g{i // 2}" for i in range(24)]  # pairs of rows share a group
    for seed in range(5):
        splits = stratified_split(strata, (0.5, 0.25, 0.25), seed=seed, groups=groups)
        for g in set(groups):
            assert len({s for s, gg in zip(splits, groups, strict=True) if gg == g}) == 1
        assert collections.Counter(splits) == {"train": 12, "valid": 6, "test": 6}


def test_bad_fractions_are_refused():
    with pytest.raises(Exception, match="summing to 1"):
        stratified_split(["a", "b"], (0.5, 0.5, 0.5))


def test_multi_label_rows_are_stratified_by_their_rarest_label():
    assert rarest_label([("a", "b"), ("a",), ("a", "c"), ("c", "b")]) == ["b", "a", "c", "b"]


def test_a_class_keeps_its_last_training_example_while_others_can_give_one():
    # 11 units, 3 each for valid and test; floors give B and C one unit per part; E (2 units)
    # is owed the most and gives one to test; for valid, E and the singleton A are owed more
    # than B and C, but giving would leave them without training data, so B (or C) gives
    strata = ["A"] + ["B"] * 4 + ["C"] * 4 + ["E"] * 2
    for seed in range(10):
        splits = stratified_split(strata, (0.5, 0.25, 0.25), seed=seed)
        for stratum in "ABCE":
            assert "train" in [s for s, c in zip(splits, strata, strict=True) if c == stratum], (
                seed,
                stratum,
            )
        assert collections.Counter(splits) == {"train": 5, "valid": 3, "test": 3}
