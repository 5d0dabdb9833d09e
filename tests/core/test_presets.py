"""Presets: named run files from plugins, merged under a run file, options and --set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from protsteps import Preset, hookimpl, registry
from protsteps.cli import main
from protsteps.errors import DuplicateComponentError, UnknownComponentError
from protsteps.registry import Catalog, default_catalog
from protsteps.runconfig import load_run_config, merge_raw

FAST = """
[encoder]
name = "gin"
hidden_dim = 24
num_layers = 3

[[tasks]]
name = "distance"
num_pairs = 16

[[tasks]]
name = "dihedral"
weight = 0.5

[train]
epochs = 2
batch_size = 3
"""


class FastPresets:
    @hookimpl
    def protsteps_register_presets(self):
        return [Preset("fast", "A small, quick run for tests.", FAST)]


class ClashingPresets:
    @hookimpl
    def protsteps_register_presets(self):
        return [Preset("fast", "Another fast.", "[train]\nepochs = 1\n")]


def test_the_built_in_presets_are_listed_with_a_description(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "paper" in out and "released code" in out
    assert main(["presets", "show", "paper"]) == 0
    assert 'negatives = "previous"' in capsys.readouterr().out


def test_default_preset_is_the_same_run_as_no_preset():
    catalog = default_catalog()
    plain = load_run_config(None, catalog, components={"teacher": "none"})
    preset = load_run_config(None, catalog, preset="default", components={"teacher": "none"})
    assert plain.to_dict() == preset.to_dict()


def test_paper_preset_resolves_to_the_released_codes_settings():
    config = load_run_config(None, default_catalog(), preset="paper", components={"teacher": "none"})
    encoder = config.encoder.config
    assert (encoder.activation, encoder.norm, encoder.hidden_dim, encoder.detach_input) == (
        "none",
        "none",
        0,
        True,
    )
    assert (encoder.edge_weight, encoder.angle_encoding, encoder.angle_basis) == (
        "inverse_square",
        "paper",
        128,
    )
    distance, dihedral = config.tasks
    assert (distance.config.num_pairs, distance.config.min_separation) == (0, 0)
    assert distance.config.pair_feature == "squared_difference"
    assert (dihedral.config.objective, dihedral.config.masking) == ("paper", "paper")
    scheme = config.scheme.config
    assert (scheme.negatives, scheme.structure_view, scheme.critic_every) == ("previous", "gnn", 2)
    assert (scheme.critic_lr, scheme.critic_schedule, scheme.anneal_inner_lr) == (0.1, "epoch_cosine", True)
    train = config.train
    assert (train.batch_size, train.epochs, train.lr, train.schedule) == (1, 5, 1e-3, "epoch_cosine")
    assert train.grad_clip == 0.0 and train.valid_fraction == 0.0
    raw = default_catalog().preset("paper").raw()
    assert raw["teacher"]["name"] == "protbert"


def test_a_file_options_and_set_apply_on_top_of_a_preset(tmp_path: Path):
    catalog = Catalog.from_plugins({**_builtin_plugins(), "fast": FastPresets()})
    run_file = tmp_path / "run.toml"
    run_file.write_text('[encoder]\nhidden_dim = 32\n\n[[tasks]]\nname = "distance"\n')
    config = load_run_config(
        run_file,
        catalog,
        preset="fast",
        components={"teacher": "none"},
        train={"epochs": 4},
        sets=["tasks.distance.min_separation=2"],
    )
    assert config.encoder.config.hidden_dim == 32 and config.encoder.config.num_layers == 3  # file on preset
    assert [t.name for t in config.tasks] == ["distance"]  # the file's task list replaces the preset's
    assert config.tasks[0].config.num_pairs == 16 and config.tasks[0].config.min_separation == 2
    assert config.train.epochs == 4 and config.train.batch_size == 3
    # naming another component drops the preset's settings for that section
    other = load_run_config(
        None, catalog, preset="fast", components={"encoder": "equivariant", "teacher": "none"}
    )
    assert other.encoder.name == "equivariant"


def test_merge_raw_leaves_its_inputs_alone():
    base = {"encoder": {"name": "gin", "hidden_dim": 8}, "tasks": [{"name": "distance", "num_pairs": 4}]}
    over = {
        "encoder": {"num_layers": 3},
        "tasks": [{"name": "distance", "weight": 2.0}, {"name": "dihedral"}],
    }
    merged = merge_raw(base, over)
    assert merged["encoder"] == {"name": "gin", "hidden_dim": 8, "num_layers": 3}
    assert merged["tasks"] == [{"name": "distance", "num_pairs": 4, "weight": 2.0}, {"name": "dihedral"}]
    assert base["encoder"] == {"name": "gin", "hidden_dim": 8} and len(base["tasks"]) == 1
    assert merge_raw(base, {"encoder": {"name": "equivariant"}})["encoder"] == {"name": "equivariant"}


def test_unknown_and_clashing_presets_are_one_line_errors(monkeypatch, capsys):
    catalog = Catalog.from_plugins({"fast": FastPresets(), "clash": ClashingPresets()})
    with pytest.raises(DuplicateComponentError, match="preset 'fast' is registered twice: by plugin 'fast'"):
        catalog.preset("fast")
    with pytest.raises(UnknownComponentError, match=r"unknown preset 'papr'\. Did you mean 'paper'"):
        default_catalog().preset("papr")
    monkeypatch.setattr(registry, "_DEFAULT", default_catalog())
    assert main(["pretrain", "--preset", "papr", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'papr'" in err and "Traceback" not in err


def test_resume_refuses_a_preset(tmp_path: Path, capsys):
    assert main(["pretrain", "--resume", str(tmp_path), "--preset", "paper"]) == 2
    assert "remove --preset" in capsys.readouterr().err


def _builtin_plugins() -> dict[str, object]:
    from protsteps_bilevel import hooks as bilevel
    from protsteps_gnn import hooks as gnn
    from protsteps_structure import hooks as structure
    from protsteps_tasks import hooks as tasks

    return {"structure": structure, "gnn": gnn, "tasks": tasks, "bilevel": bilevel}


@pytest.mark.slow
def test_paper_preset_trains_at_batch_size_one_with_a_finite_mi_from_the_second_step(
    small_structures, tiny_esm_weights, tmp_path: Path, capsys
):
    out = tmp_path / "run"
    args = [
        "pretrain",
        *(str(p) for p in small_structures[:3]),
        "--preset",
        "paper",
        "--teacher",
        "esm",
        "--set",
        f'teacher.weights="{tiny_esm_weights}"',
        "--epochs",
        "2",
        "--set",
        "train.log_every=1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert (
        captured.err.count("MI look-ahead is skipped") + captured.out.count("MI look-ahead is skipped") == 1
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train"]
    assert len(steps) == 6  # 3 proteins, batch size 1, 2 epochs
    assert steps[0]["mi_skipped"] == 1.0 and "mi" not in steps[0]
    for record in steps[1:]:
        assert math.isfinite(record["mi"]) and "mi_skipped" not in record
    assert steps[1]["critic_loss"] > 0 and "critic_loss" not in steps[2]  # every second protein
    assert steps[3]["lr"] == pytest.approx(0.5e-3) and steps[3]["inner_lr"] == pytest.approx(0.5e-4)
    config = (out / "config.toml").read_text()
    assert 'negatives = "previous"' in config and 'name = "esm"' in config
