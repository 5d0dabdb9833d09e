"""Mistakes a new user makes, answered with the command that fixes them; help screens with
defaults; failed runs that leave nothing behind; short reprs; plurals."""

from __future__ import annotations

import functools
import re
import shutil

import pytest

from protsteps import collate, featurize, registry
from protsteps._text import count
from protsteps.cli import main
from protsteps.errors import ConfigError, UnknownComponentError
from protsteps.registry import Catalog, default_catalog
from protsteps.runconfig import load_run_config
from tests import cli_args

from . import plugins_for_tests as p

pretrain_args = functools.partial(cli_args.pretrain_args, epochs=None)


# ---------------------------------------------------------------------------- hints


def test_an_esm2_model_given_as_the_teacher_names_the_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--teacher", "esm2_t6_8M_UR50D"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown teacher 'esm2_t6_8M_UR50D'")
    assert "use --teacher esm --set teacher.model=esm2_t6_8M_UR50D" in err
    assert not out.exists()
    # given as another kind, the hint still names the component that takes it
    assert main(["pretrain", "--out", str(out), "--encoder", "esm2_t12_35M_UR50D"]) == 2
    assert "use --teacher esm --set teacher.model=esm2_t12_35M_UR50D" in capsys.readouterr().err
    # a preset's name given as a component
    assert main(["pretrain", "--out", str(out), "--scheme", "paper"]) == 2
    assert "'paper' is a preset (a whole run file): use --preset paper" in capsys.readouterr().err


def test_the_hint_is_generic_over_every_components_choices(monkeypatch, capsys):
    catalog = Catalog.from_plugins({"alpha": p.alpha})
    monkeypatch.setattr(registry, "_DEFAULT", catalog)
    # a component of the kind asked for comes first
    with pytest.raises(UnknownComponentError) as caught:
        catalog.get("encoder", "relu")
    assert str(caught.value.args[0]).endswith(
        "'relu' is a value of encoder linear's activation: use --encoder linear --set encoder.activation=relu"
    )
    # else any kind's (at most two)
    with pytest.raises(UnknownComponentError) as caught:
        catalog.get("scheme", "relu")
    assert "use --featurizer residue_graph --set featurizer.activation=relu or --encoder linear" in str(
        caught.value.args[0]
    )
    with pytest.raises(UnknownComponentError) as caught:
        catalog.get("encoder", "nothing_like_it")
    assert "is a value of" not in str(caught.value.args[0])


def test_settings_for_teacher_auto_name_the_teacher_that_takes_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--out", str(out), "--set", "teacher.model=esm2_t6_8M_UR50D"]) == 2
    err = capsys.readouterr().err
    assert (
        "teacher 'auto' takes no settings, got model; name a teacher to configure it: --teacher esm " in err
    )
    assert '(in a run file: [teacher] name = "esm")' in err
    assert not out.exists()


# ---------------------------------------------------------------------------- label files


def test_a_label_file_given_to_pretrain_is_refused_before_anything_is_written(shared_data, tmp_path, capsys):
    labels = shared_data / "labels" / "scop2_class_chains.tsv"
    out = tmp_path / "run"
    assert main(["pretrain", str(labels), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"error: {labels}: this looks like a label file (columns: path, chain, pdb_chain" in err
    assert "pretrain takes structure files, folders or path lists" in err
    assert "protsteps finetune" in err and not out.exists()
    # featurize reports it as a failed input with the same reason
    assert main(["featurize", str(labels), "--out", str(tmp_path / "feat")]) == 2
    assert "this looks like a label file" in capsys.readouterr().err


def test_a_path_list_is_still_a_path_list(small_structures, tmp_path):
    from protsteps.featurize import expand_inputs, label_file_columns

    listing = tmp_path / "list.txt"
    listing.write_text("# two files\n" + "\n".join(str(s) for s in small_structures[:2]) + "\n")
    assert label_file_columns(listing) is None
    specs, failed = expand_inputs([listing])
    assert len(specs) == 2 and failed == []
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"file,label\n{small_structures[0]},a\n")
    assert label_file_columns(manifest) == ["file", "label"]


# ---------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["pretrain"], ["finetune"], ["featurize"], ["embed"], ["plugins"]])
def test_help_shows_defaults_and_no_bool_tags(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and "list[" not in out.split("Options")[-1]
    text = " ".join(out.split())
    if command == ["pretrain"]:
        for option, default in (("epochs", "10"), ("batch-size", "8"), ("encoder", "gin"), ("seed", "0")):
            assert re.search(rf"--{option} .*?\(default: {default}\)", text), option
    if command == ["finetune"]:
        assert re.search(r"--task .*?\(default: auto\)", text)
        assert re.search(r"--cache-dir .*?\(default: \$XDG_CACHE_HOME/protsteps/graphs", text)


# ---------------------------------------------------------------------------- failed runs


def test_a_failed_pretrain_takes_back_what_it_wrote(small_structures, tmp_path, capsys):
    missing = tmp_path / "nowhere.pdb"
    new = tmp_path / "new"
    assert main(pretrain_args([missing], new, tmp_path / "cache")) == 2
    assert "no usable training chains from 1 input " in capsys.readouterr().err
    assert not new.exists()
    # a folder that was there keeps what it held and gets nothing
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(pretrain_args([missing], mine, tmp_path / "cache")) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_resume_without_a_checkpoint_says_how_to_start_afresh(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(
        load_run_config(None, default_catalog(), components={"teacher": "none"}).dumps()
    )
    assert main(["pretrain", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the run saved no checkpoint" in err and f"rm -r {run}" in err and "a new --out" in err
    assert main(["pretrain", "--resume", str(tmp_path / "elsewhere")]) == 2
    assert "no such folder; start a run with --out" in capsys.readouterr().err
    shutil.rmtree(run)
    run.mkdir()
    assert main(["pretrain", "--resume", str(run)]) == 2
    assert "it holds no run" in capsys.readouterr().err


def test_under_torchrun_only_rank_0_prints_an_error(monkeypatch, tmp_path, capsys):
    args = ["pretrain", "--out", str(tmp_path / "run"), "--teacher", "bogus"]
    monkeypatch.setenv("RANK", "1")
    assert main(args) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 2
    assert capsys.readouterr().err.count("error: unknown teacher 'bogus'") == 1


# ---------------------------------------------------------------------------- repr, plurals


def test_graphs_and_batches_have_short_reprs(small_structures):
    graph = featurize(small_structures[0])[0]
    text = repr(graph)
    assert text.startswith(f"ProteinGraph(source={str(small_structures[0])!r}, chain='A', residues=")
    assert "edges=" in text and "tensor" not in text and len(text) < 200
    batch = collate([graph] * 5)
    text = repr(batch)
    assert text.startswith(f"Batch(proteins=5, residues={5 * graph.num_nodes}, edges={5 * graph.num_edges}")
    assert "... (2 more)" in text and "tensor" not in text and len(text) < 300


def test_counts_read_as_english(small_structures, tmp_path, capsys):
    assert (count(1, "file"), count(2, "file"), count(0, "epoch")) == ("1 file", "2 files", "0 epochs")
    assert count(1, "batch", "batches") == "1 batch" and count(3, "batch", "batches") == "3 batches"
    with pytest.raises(ConfigError, match=r"there is only 1 task$"):
        load_run_config(None, default_catalog(), tasks=["distance"], sets=["tasks.1.weight=2"])
    out = tmp_path / "run"
    args = pretrain_args(small_structures[:2], out, tmp_path / "cache", "--epochs", "1")
    args.remove("-q")
    assert main([*args, "--set", "train.valid_fraction=0"]) == 0
    printed = capsys.readouterr().out
    assert "structures: 2 files -> 2 chains" in printed
    assert re.search(
        r"done: \d+ steps?, 1 epoch, no validation split \(the encoder is the last epoch's\)", printed
    )
