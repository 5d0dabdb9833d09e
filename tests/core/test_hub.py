"""Exported models (issue 14 D2): ``protsteps export RUN DIR`` writes model.safetensors,
config.json and a model card; ``protsteps.from_pretrained(DIR)`` and ``--from DIR`` load them
in a fresh process to the run's own embeddings, without unpickling anything, and a folder
that was tampered with is refused in one line that names what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import protsteps
from protsteps import collate, featurize
from protsteps.cli import main
from protsteps.downstream import embed
from protsteps.errors import ConfigError, ProtstepsError
from protsteps.export import load_encoder, load_pretrained
from protsteps.hub import export_model, read_export

pytestmark = pytest.mark.slow


def _pretrain(structures, out: Path, cache: Path, *extra: str) -> Path:
    args = [
        "pretrain",
        *map(str, structures),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--set",
        "encoder.hidden_dim=16",
        "--set",
        "tasks.distance.num_pairs=32",
        "--threads",
        "1",
        "-q",
        *extra,
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub-graphs")


@pytest.fixture(scope="module")
def run(small_structures, cache, tmp_path_factory) -> Path:
    """A real pretrain run: three structures, no teacher, one epoch."""
    return _pretrain(
        small_structures[:3], tmp_path_factory.mktemp("hub-run") / "run", cache, "--teacher", "none"
    )


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub-export") / "gin-masif"
    assert main(["export", str(run), str(out)]) == 0
    return out


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    """A copy of the export to tamper with."""
    return Path(shutil.copytree(exported, tmp_path / "copy"))


def _run_embeddings(run: Path, structure: Path) -> np.ndarray:
    encoder, _ = load_encoder(run)
    encoder.eval()
    with torch.no_grad():
        output = encoder(collate(featurize(structure)))
    return torch.cat([output.graph, output.node]).numpy()


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _refusal(folder: Path, capsys, structure: Path, tmp_path: Path) -> str:
    """The error line of ``protsteps embed --from folder``, which must exit 2."""
    assert main(["embed", str(structure), "--from", str(folder), "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------- round trip


def test_the_export_holds_three_files_and_no_pickle(exported, run):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    weights = (exported / "model.safetensors").read_bytes()
    assert config["protsteps_format"] == 1 and config["library_name"] == "protsteps"
    assert config["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()
    tensors = safetensors.torch.load(weights)
    assert set(config["weights"]["tensors"]) == set(tensors)
    # the same tensors as the run's encoder.pt, under "encoder."
    record = torch.load(run / "encoder.pt", weights_only=True)
    assert set(tensors) == {f"encoder.{k}" for k in record["state_dict"]}
    for name, value in record["state_dict"].items():
        assert torch.equal(tensors[f"encoder.{name}"], value)
        assert config["weights"]["tensors"][f"encoder.{name}"] == {
            "dtype": str(value.dtype).removeprefix("torch."),
            "shape": list(value.shape),
        }
    assert config["encoder"] == {**record["encoder"], "plugin": "gnn"}
    assert config["featurizer"] == {**record["featurizer"], "plugin": "structure"}
    assert config["teacher"] == {"name": "none"}
    assert config["out_dim"] == 16 and config["teacher_dim"] is None
    assert config["plugins"]["gnn"] == {"distribution": "protsteps", "version": protsteps.__version__}
    assert config["trained_with"] == record["protsteps_version"]
    # a pickle starts with the PROTO opcode; no file of the folder is one
    assert all(not p.read_bytes().startswith(b"\x80") for p in exported.iterdir())


def test_a_fresh_process_loads_the_export_to_the_runs_embeddings(exported, run, small_structures, tmp_path):
    structure = small_structures[1]
    expected = _run_embeddings(run, structure)
    script = textwrap.dedent(
        """
        import pickle, sys
        import numpy as np
        import torch

        def refuse(*args, **kwargs):
            raise AssertionError("something was unpickled")

        torch.load = pickle.load = pickle.loads = refuse
        import protsteps

        model = protsteps.from_pretrained(sys.argv[1])
        assert not model.encoder.training
        with torch.no_grad():
            output = model.encoder(protsteps.collate(protsteps.featurize(sys.argv[2])))
        np.save(sys.argv[3], torch.cat([output.graph, output.node]).numpy())
        """
    )
    out = tmp_path / "fresh.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, str(exported), str(structure), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(out), expected)


def test_nothing_in_the_folder_is_unpickled(exported, run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    loaded = load_pretrained(exported)
    record = read_export(exported)
    monkeypatch.undo()
    encoder, _ = load_encoder(run)
    assert loaded.teacher is None and loaded.record["encoder"] == record["encoder"]
    for name, value in encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[name], value)


def test_embed_from_the_folder_equals_embed_from_the_run(exported, run, small_structures, cache):
    from_run = embed(small_structures[:3], run, per_residue=True, cache_dir=cache)
    from_export = embed(small_structures[:3], exported, per_residue=True, cache_dir=cache)
    np.testing.assert_array_equal(from_export.embeddings, from_run.embeddings)
    np.testing.assert_array_equal(from_export.residue_embeddings, from_run.residue_embeddings)


def test_the_model_card_says_what_the_run_did_and_its_example_runs(
    exported, run, small_structures, monkeypatch
):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: protsteps\n")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(m["loss"] for m in metrics if m["split"] == "valid")
    assert f"**Best validation loss**: {best:.4f}" in card
    assert f"**Steps**: {max(m['step'] for m in metrics)} " in card
    assert "**Data**: 3 inputs (`1BRS_A.pdb.gz`, `1BRS_D.pdb.gz`, `1I07_A.pdb.gz`)" in card
    assert "`distance` (weight 1.0), `dihedral` (weight 1.0)" in card
    assert f"protsteps embed structures/ --from {exported.name} --out embeddings.npz" in card
    # the card's Python example, run as written next to the folder
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    monkeypatch.chdir(exported.parent)
    namespace: dict = {}
    exec(code.replace('"protein.pdb"', repr(str(small_structures[1]))), namespace)
    expected = _run_embeddings(run, small_structures[1])
    np.testing.assert_array_equal(namespace["output"].graph.numpy(), expected[:1])


# ---------------------------------------------------------------------------- refusals


def test_a_changed_width_in_config_json_is_refused_naming_the_tensors(
    copy, capsys, small_structures, tmp_path
):
    _edit_config(copy, lambda c: c["encoder"]["config"].update(hidden_dim=32))
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert f"{copy}: the weights do not fit encoder 'gin' as its settings build it" in err
    assert "(of another shape between.0.0.bias [16] (the module's: [32])," in err
    assert "layers.0.linear.weight [16, 57] (the module's: [32, 57])" in err


def test_a_setting_its_component_refuses_is_named(copy):
    _edit_config(copy, lambda c: c["encoder"]["config"].update(hidden_dim="wide"))
    with pytest.raises(ConfigError, match=r"config\.json: .*hidden_dim"):
        protsteps.from_pretrained(copy)
    _edit_config(copy, lambda c: c["encoder"]["config"].update(hidden_dim=16, hidden_size=16))
    with pytest.raises(ConfigError, match=r"config\.json: unknown key 'hidden_size' in \[encoder\] \(gin\)"):
        protsteps.from_pretrained(copy)


def test_a_component_whose_plugin_is_absent_names_its_distribution(copy, capsys, small_structures, tmp_path):
    def edit(config):
        config["encoder"].update(name="schnet", plugin="acme")
        config["plugins"]["acme"] = {"distribution": "acme-protein-encoders", "version": "2.1.0"}

    _edit_config(copy, edit)
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert (
        f"error: {copy}: encoder 'schnet' is not installed here (it comes from plugin 'acme' of package "
        "acme-protein-encoders 2.1.0); install it (pip install 'acme-protein-encoders==2.1.0')" in err
    )


def test_bad_json_is_refused_with_where(copy, capsys, small_structures, tmp_path):
    path = copy / "config.json"
    path.write_text(path.read_text().replace('"out_dim": 16,', '"out_dim": 16', 1))
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert f"error: {path} is not valid JSON (line " in err


def _rewrite_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    tensors = safetensors.torch.load(path.read_bytes())
    change(tensors)
    safetensors.torch.save_file(tensors, path)


def test_a_deleted_or_renamed_tensor_is_named(copy, capsys, small_structures, tmp_path):
    _rewrite_weights(copy, lambda t: t.pop("encoder.layers.0.eps"))
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert (
        f"{copy}: model.safetensors does not hold the tensors config.json lists (missing encoder.layers.0.eps)"
        in err
    )
    _rewrite_weights(copy, lambda t: t.update({"encoder.layers.0.epsilon": torch.zeros(())}))
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert "(missing encoder.layers.0.eps; unexpected encoder.layers.0.epsilon)" in err


def test_a_swapped_weights_file_is_refused(copy, capsys, small_structures, tmp_path):
    # another model's weights: the same names and shapes, other values
    _rewrite_weights(copy, lambda t: t.update({k: v + 0.01 for k, v in t.items()}))
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert (
        f"{copy}: model.safetensors is not the file config.json was written with (its SHA-256 differs" in err
    )
    (copy / "model.safetensors").unlink()
    err = _refusal(copy, capsys, small_structures[0], tmp_path)
    assert f"error: {copy}: model.safetensors is missing" in err


def test_tensors_that_match_the_list_but_not_the_encoder_are_named(copy):
    """A folder made consistent by hand (list and SHA-256 rewritten) still meets the
    encoder's own strict key check."""

    def drop(tensors):
        tensors.pop("encoder.layers.1.eps")

    _rewrite_weights(copy, drop)
    data = (copy / "model.safetensors").read_bytes()

    def relist(config):
        del config["weights"]["tensors"]["encoder.layers.1.eps"]
        config["weights"]["sha256"] = hashlib.sha256(data).hexdigest()

    _edit_config(copy, relist)
    with pytest.raises(
        ProtstepsError, match=r"do not fit encoder 'gin' as its settings build it \(missing layers\.1\.eps\)"
    ):
        protsteps.from_pretrained(copy)


# ------------------------------------------------------------------------------- export


def test_export_never_writes_into_a_folder_that_holds_something_else(run, exported, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(taken)]) == 2
    assert "is not empty; give a new or empty folder, or --force" in capsys.readouterr().err
    assert main(["export", str(run), str(taken), "--force"]) == 2
    assert "holds files that are not a protsteps export" in capsys.readouterr().err
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    # an empty folder is fine, and --force replaces an earlier export
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(run / "encoder.pt"), str(empty)]) == 0
    assert main(["export", str(run), str(empty)]) == 2
    assert main(["export", str(run), str(empty), "--force"]) == 0
    # an export is a function of the run: the same bytes, the same SHA-256
    for name in ("model.safetensors", "config.json"):
        assert (empty / name).read_bytes() == (exported / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]  # nothing left beside


def test_export_force_keeps_the_earlier_export_when_the_new_one_cannot_take_its_place(
    run, tmp_path, monkeypatch
):
    """--force moves the earlier export aside before renaming the new one into place; when
    that rename fails the earlier export goes back, unchanged, and nothing is left beside."""
    import protsteps.hub as hub

    out = tmp_path / "out"
    export_model(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = os.rename

    def rename(source, target):
        if str(source).endswith(".tmp") and Path(target) == out:  # the new export into place
            raise OSError(28, "No space left on device")
        return real_rename(source, target)

    monkeypatch.setattr(hub.os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        export_model(run, out, force=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # and when it cannot be put back either, the error says where it is
    def nothing_into_out(source, target):
        if Path(target) == out:
            raise OSError(5, "Input/output error")
        return real_rename(source, target)

    monkeypatch.setattr(hub.os, "rename", nothing_into_out)
    with pytest.raises(
        ProtstepsError, match=r"nor the earlier one put back .*the earlier export is at "
    ) as caught:
        export_model(run, out, force=True)
    monkeypatch.undo()
    aside = Path(str(caught.value).rsplit("the earlier export is at ", 1)[1])
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before


def test_export_refuses_a_folder_without_encoder_pt(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "holds no encoder.pt: give a pretrain run folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_encoder_pt_outside_its_run_folder_exports_without_training_details(run, tmp_path):
    alone = tmp_path / "encoder.pt"
    shutil.copyfile(run / "encoder.pt", alone)
    written = export_model(alone, tmp_path / "out")
    assert written.notes and "not in a run folder" in written.notes[0]
    assert "pretraining" not in json.loads((tmp_path / "out" / "config.json").read_text())
    assert "Not recorded" in (tmp_path / "out" / "README.md").read_text()


# ------------------------------------------------------------------------ with a teacher


def test_an_esm_teacher_travels_and_gives_the_same_embeddings(
    small_structures, cache, tiny_esm_weights, tmp_path
):
    run = _pretrain(
        small_structures[:2],
        tmp_path / "esm-run",
        cache,
        "--teacher",
        "esm",
        "--set",
        f'teacher.weights="{tiny_esm_weights}"',
    )
    out = tmp_path / "esm-export"
    export_model(run, out)
    config = json.loads((out / "config.json").read_text())
    record = torch.load(run / "encoder.pt", weights_only=True)
    assert config["teacher"]["name"] == "esm" and config["teacher"]["plugin"] == "esm"
    assert config["teacher"]["fingerprint"] == record["teacher_fingerprint"]
    assert config["teacher_dim"] == record["teacher_dim"] == 32
    teacher_tensors = {k for k in config["weights"]["tensors"] if k.startswith("teacher.")}
    assert teacher_tensors == {f"teacher.{k}" for k in record.get("teacher_state", {})}
    from_run = embed(small_structures[:2], run, cache_dir=cache)
    from_export = embed(small_structures[:2], out, cache_dir=cache)
    np.testing.assert_array_equal(from_export.embeddings, from_run.embeddings)
    assert protsteps.from_pretrained(out).teacher is not None


def test_finetune_from_the_folder_equals_finetune_from_the_run(
    exported, run, small_structures, cache, tmp_path
):
    """``finetune --from DIR`` (an export) trains the same probe as ``--from RUN``: same
    embeddings in, same seed, the same metrics out."""
    manifest = tmp_path / "labels.tsv"
    rows = [
        f"{p}\t\t{'xy'[i % 2]}\t{(['train'] * 4 + ['valid', 'test'])[i]}"
        for i, p in enumerate(small_structures)
    ]
    manifest.write_text("path\tchain\tlabel\tsplit\n" + "\n".join(rows) + "\n")
    results = []
    for name, source in (("from-run", run), ("from-export", exported)):
        out = tmp_path / name
        args = ["finetune", str(manifest), "--from", str(source), "--mode", "probe", "--epochs", "3"]
        assert main([*args, "--out", str(out), "--cache-dir", str(cache), "--threads", "1", "-q"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        head = torch.load(out / "head.pt", weights_only=True)
        results.append((metrics["best_epoch"], metrics["valid"], metrics["test"], head))
    assert results[0][:3] == results[1][:3]
    heads = [r[3]["state_dict"] if "state_dict" in r[3] else r[3] for r in results]
    tensors = [{k: v for k, v in h.items() if isinstance(v, torch.Tensor)} for h in heads]
    assert tensors[0].keys() == tensors[1].keys() and tensors[0]
    assert all(
        torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0]
    )  # trained on the same embeddings
