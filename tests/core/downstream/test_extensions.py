"""The extension hooks (heads, label formats, metrics, embeddings writers, training
callbacks, CLI commands): registration, refusals, and the built-ins that use them."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import typer

import protsteps_downstream.hooks as downstream_hooks
import protsteps_loggers.hooks as loggers_hooks
from protsteps import hookimpl, registry
from protsteps.callbacks import TrainingCallbacks
from protsteps.cli import main
from protsteps.downstream import Embeddings, FinetuneConfig, finetune, load_embeddings, read_manifest
from protsteps.downstream._adapters import read_labels
from protsteps.errors import ComponentUnavailableError, DuplicateComponentError, ProtstepsError
from protsteps.extensions import (
    CallbackContext,
    Command,
    EmbeddingsWriter,
    Head,
    HeadContext,
    LabelFormat,
    LabelOptions,
    Metric,
    RunStart,
    TrainingCallback,
    writer_for,
)
from protsteps.registry import Catalog, default_catalog
from protsteps.runconfig import load_run_config
from protsteps_loggers.csv_logger import CSVLogger


def _plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose hooks return the given records."""
    namespace = types.SimpleNamespace()
    for name, records in hooks.items():
        setattr(namespace, name, hookimpl(lambda records=records: list(records)))
    return namespace


def _head_of(width: int):
    return lambda context: torch.nn.Linear(context.in_dim, width)


def _catalog(**plugins) -> Catalog:
    """The installed plugins (the built-ins: downstream, loggers, gnn, ...) and ``plugins``."""
    installed = {
        name: plugin for name, plugin in default_catalog().plugin_manager.list_name_plugin() if plugin
    }
    assert installed["downstream"] is downstream_hooks and installed["loggers"] is loggers_hooks
    return Catalog.from_plugins({**installed, **plugins})


# ---------------------------------------------------------------------------- registry


def test_the_built_ins_come_through_the_hooks():
    extensions = default_catalog().extensions
    owners = {(e.kind, e.name): e.plugin for e in extensions.entries()}
    assert {name for kind, name in owners if kind == "head"} >= {"mlp", "linear"}
    assert {name for kind, name in owners if kind == "label_format"} >= {"manifest", "protfunct", "deeploc"}
    assert {name for kind, name in owners if kind == "metric"} >= {
        "accuracy",
        "macro_f1",
        "fmax",
        "micro_aupr",
    }
    assert {name for kind, name in owners if kind == "embeddings_writer"} >= {"npz", "parquet"}
    assert {name for kind, name in owners if kind == "callback"} >= {"csv", "tensorboard"}
    assert owners[("command", "embeddings")] == "downstream"
    assert owners[("head", "mlp")] == "downstream" and owners[("callback", "csv")] == "loggers"


def test_a_name_two_plugins_register_is_refused_naming_both():
    copy = _plugin(protsteps_register_heads=[Head("mlp", _head_of(2), "A copy of mlp.")])
    catalog = _catalog(copycat=copy)
    with pytest.raises(DuplicateComponentError, match="head 'mlp' is registered twice") as info:
        catalog.extensions.get("head", "mlp")
    assert "plugin 'downstream'" in str(info.value) and "plugin 'copycat'" in str(info.value)
    assert any("head 'mlp'" in str(error) for error in catalog.conflicts)
    assert catalog.extensions.get("head", "linear").plugin == "downstream"  # the rest still works


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ProtstepsError) as info:
        _catalog().extensions.get("metric", "macro_f")
    assert str(info.value) == (
        "unknown metric 'macro_f'. Did you mean 'macro_f1'? Known metrics: accuracy, fmax, macro_f1, micro_aupr"
    )


def test_a_hook_that_returns_the_wrong_record_is_a_plugin_failure():
    bad = _plugin(protsteps_register_metrics=["accuracy"])
    odd = _plugin(protsteps_register_label_formats=[LabelFormat("tsv", print, "x", options=("sheet",))])
    catalog = _catalog(bad=bad, odd=odd)
    failures = {f.plugin: f.error for f in catalog.failures}
    assert "returned 'accuracy', expected protsteps.extensions.Metric" in failures["bad"]
    assert "takes unknown options ['sheet']" in failures["odd"]
    assert catalog.extensions.names("metric") == ["accuracy", "fmax", "macro_f1", "micro_aupr"]


# ---------------------------------------------------------------------------- label formats


def test_read_labels_refuses_options_a_format_does_not_take(labels_dir):
    catalog = _catalog()
    with pytest.raises(ProtstepsError) as info:
        read_labels(labels_dir / "scop2_chains.tsv", "manifest", LabelOptions(id_column="acc"), catalog)
    assert str(info.value).startswith("--format manifest does not take --id-column (it takes --label-column,")
    with pytest.raises(ProtstepsError, match="--format protfunct needs --structures DIR"):
        read_labels(labels_dir / "ieconv" / "ProtFunct", "protfunct", LabelOptions(), catalog)


def test_a_plugin_label_format_is_read_and_its_error_names_it(labels_dir, tmp_path):
    def by_class(path: Path, options: LabelOptions):
        if path.suffix != ".tsv":
            raise ValueError("expects a .tsv file")
        return read_manifest(path, label_column=options.label_column or "scop2_class")

    catalog = _catalog(
        lab=_plugin(protsteps_register_label_formats=[LabelFormat("lab", by_class, "x", ("label_column",))])
    )
    data = read_labels(labels_dir / "scop2_chains.tsv", "lab", LabelOptions(), catalog)
    assert data.label_column == "scop2_class" and len(data.rows) > 10
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ProtstepsError) as info:
        read_labels(tmp_path / "x.csv", "lab", LabelOptions(), catalog)
    assert str(info.value) == (
        f"label format 'lab' of plugin 'lab' could not read {tmp_path / 'x.csv'}: ValueError: expects a .tsv file"
    )


# ---------------------------------------------------------------------------- writers


def _embeddings() -> Embeddings:
    return Embeddings(
        embeddings=np.arange(6, dtype=np.float32).reshape(2, 3),
        source=["a.pdb", "b.pdb"],
        chain=["A", "B"],
        residues=np.array([4, 5]),
        sequence=["ACDE", "FGHIK"],
        meta={"dim": 3},
    )


def test_writers_are_picked_by_name_or_suffix(tmp_path):
    def write_text(embeddings, path):
        path.write_text("\n".join(",".join(map(str, row)) for row in embeddings.embeddings))

    catalog = _catalog(
        text=_plugin(protsteps_register_embeddings_writers=[EmbeddingsWriter("csv", write_text, ".csv", "x")])
    )
    extensions = catalog.extensions
    assert writer_for(extensions, tmp_path / "e.npz").name == "npz"
    assert writer_for(extensions, tmp_path / "e.CSV").name == "csv"
    with pytest.raises(ProtstepsError, match=r"the npz writer writes \.npz files; name the file e\.npz"):
        writer_for(extensions, tmp_path / "e.csv", "npz")
    with pytest.raises(ProtstepsError) as info:
        writer_for(extensions, tmp_path / "e.txt")
    assert "the file name must end in .csv, .h5, .hdf5, .npz or .parquet" in str(info.value)
    _embeddings().save(tmp_path / "e.csv", catalog=catalog)
    assert (tmp_path / "e.csv").read_text() == "0.0,1.0,2.0\n3.0,4.0,5.0"
    _embeddings().save(tmp_path / "e.npz", catalog=catalog)
    assert load_embeddings(tmp_path / "e.npz").chain == ["A", "B"]


# ---------------------------------------------------------------------------- callbacks


def test_the_csv_logger_widens_its_header_and_drops_rows_after_a_resumed_step(tmp_path):
    context = CallbackContext(run_dir=tmp_path, config={}, resume=False)
    logger = CSVLogger(context)
    logger.on_start(RunStart(0, 4))
    logger.on_log({"step": 1, "epoch": 0, "split": "train", "loss": 2.5})
    logger.on_log({"step": 2, "epoch": 0, "split": "train", "loss": 2.0})
    logger.on_log({"step": 2, "epoch": 0, "split": "valid", "loss": float("nan"), "distance/loss": 1.5})
    logger.on_log({"step": 3, "epoch": 1, "split": "train", "loss": 1.0})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert list(rows[0]) == ["step", "epoch", "split", "loss", "distance/loss"]
    assert [(r["step"], r["split"], r["loss"], r["distance/loss"]) for r in rows] == [
        ("1", "train", "2.5", ""),
        ("2", "train", "2.0", ""),
        ("2", "valid", "nan", "1.5"),
        ("3", "train", "1.0", ""),
    ]
    resumed = CSVLogger(CallbackContext(run_dir=tmp_path, config={}, resume=True))
    resumed.on_start(RunStart(2, 4))
    resumed.on_log({"step": 3, "epoch": 1, "split": "train", "loss": 0.5})
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "2.5"), ("2", "2.0"), ("2", "nan"), ("3", "0.5")]


def test_a_failing_callback_is_warned_about_and_dropped():
    class Broken(TrainingCallback):
        def on_log(self, record):
            raise OSError("disk full")

    class Counting(TrainingCallback):
        seen = 0

        def on_log(self, record):
            Counting.seen += 1

    callbacks = TrainingCallbacks([("broken", "p", Broken()), ("counting", "q", Counting())])
    warnings: list[str] = []
    callbacks.warn = warnings.append
    callbacks.log({"step": 1})
    callbacks.log({"step": 2})
    assert Counting.seen == 2 and [name for name, _, _ in callbacks.active] == ["counting"]
    assert warnings == [
        "warning: callback 'broken' of plugin 'p' failed in on_log and is called no more: OSError: disk full"
    ]


def test_callback_names_are_checked_and_factory_errors_name_the_plugin(tmp_path):
    def factory(context):
        raise RuntimeError("no display")

    catalog = _catalog(viz=_plugin(protsteps_register_callbacks=[protsteps_callback("viz", factory)]))
    context = CallbackContext(tmp_path, {}, False)
    with pytest.raises(ProtstepsError, match=r"unknown callback 'cvs'\. Did you mean 'csv'\?"):
        TrainingCallbacks.build(catalog, ["cvs"], context)
    with pytest.raises(ProtstepsError) as info:
        TrainingCallbacks.build(catalog, ["csv", "viz"], context)
    assert str(info.value) == "callback 'viz' of plugin 'viz' could not be built: RuntimeError: no display"
    assert TrainingCallbacks.build(catalog, ["csv", "viz"], context, enabled=False).active == []


def protsteps_callback(name, factory):
    from protsteps.extensions import Callback

    return Callback(name, factory, "test")


def test_tensorboard_is_refused_in_one_line_when_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ComponentUnavailableError) as info:
        TrainingCallbacks.build(_catalog(), ["tensorboard"], CallbackContext(tmp_path, {}, False))
    assert (
        "callback 'tensorboard' needs the tensorboard package: pip install 'protsteps[tensorboard]'"
        in str(info.value)
    )


def test_tensorboard_writes_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callbacks = TrainingCallbacks.build(_catalog(), ["tensorboard"], CallbackContext(tmp_path, {}, False))
    callbacks.start(RunStart(0, 2))
    callbacks.log({"step": 1, "epoch": 0, "split": "train", "loss": 2.0, "distance/loss": 1.25})
    callbacks.log({"step": 2, "epoch": 0, "split": "valid", "loss": 1.5, "nonfinite": ["x"]})
    callbacks.end("completed")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/distance/loss", "train/loss", "valid/loss"]
    assert [(e.step, e.value) for e in events.Scalars("train/distance/loss")] == [(1, 1.25)]


def test_pretrain_writes_metrics_csv_with_every_jsonl_record(pretrain_run):
    records = [json.loads(line) for line in (pretrain_run / "metrics.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader(open(pretrain_run / "metrics.csv")))
    assert [(r["step"], r["split"]) for r in rows] == [(str(r["step"]), r["split"]) for r in records]
    assert float(rows[0]["loss"]) == pytest.approx(records[0]["loss"], rel=1e-6)


# ---------------------------------------------------------------------------- heads and metrics


def test_finetune_uses_the_named_head_and_metric(small_structures, graph_cache, tmp_path):
    def top_class_rate(probabilities, targets):
        return float((probabilities.argmax(1) == targets).mean()) if len(targets) else float("nan")

    seen: list[HeadContext] = []

    def tiny(context: HeadContext):
        seen.append(context)
        return torch.nn.Linear(context.in_dim, context.num_classes)

    catalog = _catalog(
        lab=_plugin(
            protsteps_register_heads=[Head("tiny", tiny, "One linear layer, no norm.")],
            protsteps_register_metrics=[Metric("top_rate", top_class_rate, "single", "Top-class rate.")],
        )
    )
    rows = [
        [str(p), "", y, s]
        for p, y, s in zip(small_structures, "ababab", ["train"] * 4 + ["valid", "test"], strict=True)
    ]
    path = tmp_path / "m.tsv"
    path.write_text("path\tchain\tlabel\tsplit\n" + "".join("\t".join(r) + "\n" for r in rows))
    scratch = load_run_config(None, catalog, components={"teacher": "none"}, sets=["encoder.hidden_dim=16"])
    config = FinetuneConfig(
        epochs=2, batch_size=3, cache_dir=str(graph_cache), mode="probe", head="tiny", metric="top_rate"
    )
    result = finetune(
        read_manifest(path),
        None,
        tmp_path / "run",
        config,
        scratch=scratch,
        catalog=catalog,
        show_progress=False,
    )
    assert seen == [HeadContext(in_dim=16, num_classes=2, hidden=256, dropout=0.1, multi_label=False)]
    metrics = result.metrics
    assert metrics["selection"]["metric"] == "valid top_rate"
    assert {"accuracy", "macro_f1", "top_rate"} <= set(metrics["test"]) and "fmax" not in metrics["test"]
    assert all("valid_top_rate" in h for h in metrics["history"])
    head = torch.load(tmp_path / "run" / "head.pt", weights_only=True)
    assert head["head_name"] == "tiny" and set(head["state_dict"]) == {"weight", "bias"}

    multi_only = FinetuneConfig(epochs=1, cache_dir=str(graph_cache), metric="fmax")
    with pytest.raises(
        ProtstepsError, match="metric 'fmax' scores multi-label tasks, this one is single-label"
    ):
        finetune(
            read_manifest(path),
            None,
            tmp_path / "run2",
            multi_only,
            scratch=scratch,
            catalog=catalog,
            show_progress=False,
        )
    assert not (tmp_path / "run2").exists()  # refused before anything is featurized or written


# ---------------------------------------------------------------------------- commands


@pytest.fixture
def with_catalog(monkeypatch):
    """Make ``catalog`` the CLI's catalog for one test."""

    def use(catalog: Catalog) -> None:
        monkeypatch.setattr(registry, "_DEFAULT", catalog)

    yield use


def _greeting_app() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def hello(name: str) -> None:
        """Greet NAME."""
        print(f"hello {name}")

    @app.command()
    def fail() -> None:
        raise ProtstepsError("nothing to greet")

    return app


def test_a_plugin_command_is_mounted_under_its_name(with_catalog, capsys):
    with_catalog(
        _catalog(greet=_plugin(protsteps_register_commands=[Command("greet", _greeting_app(), "Greetings.")]))
    )
    assert main(["greet", "hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
    assert main(["greet", "fail"]) != 0
    assert capsys.readouterr().err.strip() == "error: nothing to greet"
    assert main(["--help"]) == 0
    assert "greet" in capsys.readouterr().out


def test_command_name_clashes_are_refused_naming_both(with_catalog, capsys):
    from protsteps.cli._app import command_clashes, own_commands

    one = _plugin(protsteps_register_commands=[Command("greet", _greeting_app(), "One.")])
    two = _plugin(protsteps_register_commands=[Command("greet", _greeting_app(), "Two.")])
    takeover = _plugin(protsteps_register_commands=[Command("pretrain", _greeting_app(), "Mine.")])
    with_catalog(_catalog(one=one, two=two, takeover=takeover))
    assert main(["greet", "hello", "x"]) != 0
    err = capsys.readouterr().err
    assert "error: command 'greet' is registered twice: by plugin 'one' and by plugin 'two'" in err
    assert command_clashes(own_commands()) == [
        "command 'pretrain' of plugin 'takeover' is not mounted: protsteps' own command 'pretrain' has "
        "that name; rename it in the plugin"
    ]
    assert main(["plugins"]) == 1
    assert "command 'pretrain' of plugin 'takeover' is not mounted" in capsys.readouterr().err


def test_the_embeddings_command_shows_and_converts(tmp_path, capsys):
    _embeddings().save(tmp_path / "e.npz")
    assert main(["embeddings", "show", str(tmp_path / "e.npz")]) == 0
    assert "2 chains, d = 3, per-residue embeddings: no, failed inputs: 0" in capsys.readouterr().out
    assert main(["embeddings", "convert", str(tmp_path / "e.npz"), str(tmp_path / "f.npz")]) == 0
    assert np.array_equal(load_embeddings(tmp_path / "f.npz").embeddings, _embeddings().embeddings)
    assert main(["embeddings", "convert", str(tmp_path / "e.npz"), str(tmp_path / "f.txt")]) != 0
    assert "the file name must end in .h5, .hdf5, .npz or .parquet" in capsys.readouterr().err


def test_a_command_named_like_protsteps_own_fails_the_listing(with_catalog, capsys):
    takeover = _plugin(protsteps_register_commands=[Command("embed", _greeting_app(), "Mine.")])
    with_catalog(_catalog(takeover=takeover))
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert "error: command 'embed' of plugin 'takeover' is not mounted: protsteps' own command 'embed'" in err


def test_plugins_show_describes_an_extension(capsys):
    assert main(["plugins", "show", "label_format", "protfunct"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("label format protfunct  (plugin downstream ")
    assert "  options: --structures, --label-column\n  needs_structures: True\n" in out
    assert main(["plugins", "show", "metric", "macro_f"]) != 0
    assert "unknown metric 'macro_f'. Did you mean 'macro_f1'?" in capsys.readouterr().err
