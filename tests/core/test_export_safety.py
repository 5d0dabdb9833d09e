"""encoder.pt carries the teacher's trained state (issue 13 D6), never decides where protsteps
writes (issue 12 D7), and a file torch refuses is one line without torch's advice to load it
with ``weights_only=False``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
from pathlib import Path

import pytest
import torch
from torch import nn

from protsteps import ALPHABET, BuildContext, Component, Teacher, hookimpl, option, registry
from protsteps.cli import main
from protsteps.downstream import embed
from protsteps.errors import ConfigError, ProtstepsError
from protsteps.export import encoder_record, load_pretrained
from protsteps.model import compose
from protsteps.registry import ENTRY_POINT_GROUP, Catalog
from protsteps.runconfig import load_run_config
from protsteps.training import load_checkpoint, pretrain
from protsteps_bilevel.joint import JointScheme


@dataclasses.dataclass
class TailConfig:
    width: int = option(12, "Width of the residue embeddings.")
    cache_dir: Path | None = option(None, "Where the teacher keeps a file per sequence it embeds.")
    weights: Path | None = option(None, "A file the teacher reads its profile scale from.")


class TailTeacher(Teacher):
    """One-hot residues through a randomly initialised linear tail (not rebuilt from config);
    with ``cache_dir`` it writes a file per sequence it embeds, like a trunk cache."""

    def __init__(self, config: TailConfig, context: BuildContext) -> None:
        super().__init__()
        self.embed_dim = config.width
        self.cache_dir = config.cache_dir
        self.tail = nn.Linear(len(ALPHABET), config.width)

    def tail_parameters(self):
        return dict(self.tail.named_parameters())

    def forward(self, sequences, tail=None):
        if self.cache_dir is not None:
            for sequence in sequences:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                (self.cache_dir / f"{abs(hash(sequence))}.seen").write_text(sequence)
        index = torch.tensor(
            [ALPHABET.index(c) if c in ALPHABET else len(ALPHABET) - 1 for s in sequences for c in s]
        )
        one_hot = nn.functional.one_hot(index, len(ALPHABET)).float()
        if tail is None:
            return self.tail(one_hot)
        return torch.func.functional_call(self.tail, dict(tail), (one_hot,))


class ClaimsStateless(TailTeacher):
    """Declares itself rebuildable from its config, yet draws its tail at random."""

    stateless = True


class TailTrainingScheme(JointScheme):
    """Joint training that also moves the teacher's tail at every step (what a plugin scheme
    training the teacher does)."""

    def setup(self, setup) -> None:
        self.model = setup.model
        super().setup(setup)

    def step(self, batch, generator=None):
        with torch.no_grad():
            for parameter in self.model.teacher.tail_parameters().values():
                parameter.add_(0.05)
        return super().step(batch, generator)


class _TeacherPlugin:
    @hookimpl
    def protsteps_register_teachers(self):
        return [
            Component("tail_teacher", TailTeacher, TailConfig, "A trainable tail, random at build."),
            Component("claims_stateless", ClaimsStateless, TailConfig, "Says stateless, is not."),
        ]

    @hookimpl
    def protsteps_register_schemes(self):
        from protsteps_bilevel.joint import JointConfig

        return [Component("tail_training", TailTrainingScheme, JointConfig, "Joint, and moves the tail.")]


@pytest.fixture
def catalog(monkeypatch) -> Catalog:
    plugins: dict[str, object] = {
        ep.name: ep.load()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.name not in ("esm", "protbert")
    }
    # the built-in plugins of the embeddings writers, however stale the installed metadata is
    plugins.setdefault("downstream", importlib.import_module("protsteps_downstream.hooks"))
    plugins["teachers"] = _TeacherPlugin()
    made = Catalog.from_plugins(plugins)
    monkeypatch.setattr(registry, "_DEFAULT", made)
    return made


def _config(catalog, teacher="tail_teacher", scheme="joint", sets=()):
    return load_run_config(
        None,
        catalog,
        components={"teacher": teacher, "scheme": scheme},
        tasks=["distance"],
        sets=["encoder.hidden_dim=16", *sets],
    )


def test_a_tail_trained_during_pretraining_travels_with_the_encoder(catalog, small_structures, tmp_path):
    config = _config(
        catalog,
        scheme="tail_training",
        sets=[
            f"data.inputs={[str(p) for p in small_structures[:3]]!r}".replace("'", '"'),
            f'data.cache_dir="{tmp_path / "graphs"}"',
            "train.epochs=1",
            "train.batch_size=2",
            "train.valid_fraction=0.0",
            "train.callbacks=[]",
        ],
    )
    run = tmp_path / "run"
    torch.manual_seed(0)
    untrained = compose(config, catalog).model.teacher  # the tail as a fresh build draws it (seed 0)
    pretrain(config, run, catalog, show_progress=False)
    record = torch.load(run / "encoder.pt", weights_only=True)
    assert set(record["teacher_state"]) == {"tail.weight", "tail.bias"}

    loaded = load_pretrained(run, catalog)
    sequences = ["MKTAYIAKQR", "GSHMLE"]
    with torch.no_grad():
        rebuilt = TailTeacher(TailConfig(), BuildContext())
        rebuilt.load_state_dict(record["teacher_state"])
        torch.testing.assert_close(loaded.teacher(sequences), rebuilt(sequences), rtol=0, atol=0)
        # the tail really moved in training: the state is not what a fresh build gives
        assert not torch.allclose(loaded.teacher(sequences), untrained(sequences))
        assert torch.allclose(record["teacher_state"]["tail.bias"], untrained.tail.bias + 0.05 * _steps(run))


def _steps(run: Path) -> int:
    return int(load_checkpoint(run / "checkpoints" / "last.pt")["step"])


def test_a_stateless_teachers_state_is_left_out_until_training_changes_it(catalog, tmp_path):
    composition = compose(_config(catalog, teacher="claims_stateless"), catalog)
    model = composition.model
    record = encoder_record(
        model.encoder,
        composition.config,
        model.teacher.embed_dim,
        teacher=model.teacher,
        teacher_fingerprint=model.teacher_fingerprint,
    )
    assert "teacher_state" not in record and len(record["teacher_fingerprint"]) == 64
    path = tmp_path / "encoder.pt"
    torch.save(record, path)
    # rebuilt from its config it draws another tail: the fingerprint catches the lie
    with pytest.raises(ProtstepsError) as caught:
        load_pretrained(path, catalog)
    assert str(caught.value) == (
        f"{path}: teacher 'claims_stateless' rebuilt from its settings is not the teacher the encoder was "
        "trained with (its weights differ: another weights file or model version, or a plugin teacher "
        "that declares itself stateless but is not); give it the same weights"
    )
    # once training changed its state, the state travels even for a stateless teacher
    with torch.no_grad():
        model.teacher.tail.weight.mul_(2.0)
    record = encoder_record(
        model.encoder,
        composition.config,
        model.teacher.embed_dim,
        teacher=model.teacher,
        teacher_fingerprint=model.teacher_fingerprint,
    )
    torch.testing.assert_close(record["teacher_state"]["tail.weight"], model.teacher.tail.weight)
    torch.save(record, path)
    assert torch.equal(load_pretrained(path, catalog).teacher.tail.weight, model.teacher.tail.weight)


def _exported(catalog, tmp_path, **teacher_settings) -> Path:
    sets = [f'teacher.{k}="{v}"' for k, v in teacher_settings.items()]
    composition = compose(_config(catalog, sets=sets), catalog)
    model = composition.model
    path = tmp_path / "encoder.pt"
    torch.save(
        encoder_record(model.encoder, composition.config, model.teacher.embed_dim, teacher=model.teacher),
        path,
    )
    return path


def test_a_crafted_encoder_file_cannot_point_the_teachers_cache_elsewhere(
    catalog, tmp_path, small_structures, capsys
):
    path = _exported(catalog, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    record = torch.load(path, weights_only=True)
    record["teacher"]["config"]["cache_dir"] = str(elsewhere)  # what a downloaded file could say
    torch.save(record, path)

    result = embed(small_structures[:2], path, cache_dir=tmp_path / "graphs", catalog=catalog)
    assert len(result) == 2
    assert not elsewhere.exists()  # nothing written there
    # the command line says so
    args = ["embed", str(small_structures[0]), "--from", str(path), "--out", str(tmp_path / "e.npz")]
    assert main([*args, "--cache-dir", str(tmp_path / "graphs")]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"note: teacher.cache_dir = {str(elsewhere)!r} in the encoder file is not used" in err
    assert not elsewhere.exists()

    loaded = load_pretrained(path, catalog)
    assert loaded.teacher.cache_dir is None
    assert loaded.notes == [
        f"teacher.cache_dir = {str(elsewhere)!r} in the encoder file is not used (a location on the "
        "machine that wrote it)"
    ]
    # the user's own choice is used
    mine = tmp_path / "mine"
    loaded = load_pretrained(path, catalog, settings={"teacher": {"cache_dir": mine}})
    assert loaded.teacher.cache_dir == mine
    loaded.teacher(["MKT"])
    assert len(list(mine.iterdir())) == 1 and not elsewhere.exists()
    # only locations can be given: the rest is the encoder file's
    with pytest.raises(
        ConfigError, match=r"^teacher tail_teacher: width cannot be set for a pretrained encoder"
    ):
        load_pretrained(path, catalog, settings={"teacher": {"width": 4}})


def test_a_file_to_read_is_kept_when_it_exists_here_and_dropped_otherwise(catalog, tmp_path):
    weights = tmp_path / "profile.bin"
    weights.write_bytes(b"\0")
    path = _exported(catalog, tmp_path, weights=weights)
    assert load_pretrained(path, catalog).record["teacher"]["config"]["weights"] == str(weights)
    weights.unlink()
    weights.mkdir()  # a folder (or a FIFO, a device, a missing path) is never read from a file's word
    loaded = load_pretrained(path, catalog)
    assert "weights" not in loaded.record["teacher"]["config"]
    assert loaded.notes[0].startswith("teacher.weights = ")


def test_refused_pickles_are_one_line_without_torchs_weights_only_advice(
    catalog, tmp_path, capsys, small_structures
):
    crafted = tmp_path / "encoder.pt"
    torch.save({"format": 1, "state_dict": {}, "extra": argparse.Namespace(cmd="touch /tmp/pwned")}, crafted)
    with pytest.raises(ProtstepsError) as caught:
        load_pretrained(crafted, catalog)
    assert str(caught.value) == (
        f"encoder file {crafted} cannot be read: it holds a Python object (argparse.Namespace) and "
        "protsteps reads only tensors, numbers and strings from its files"
    )
    code = main(["embed", str(small_structures[0]), "--from", str(crafted), "--out", str(tmp_path / "e.npz")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "weights_only" not in err
    assert err.startswith(f"error: encoder file {crafted} cannot be read: it holds a Python object")

    garbage = tmp_path / "last.pt"
    garbage.write_bytes(b"\x80\x02garbage that is not a torch file")
    with pytest.raises(ProtstepsError) as caught:
        load_checkpoint(garbage)
    message = str(caught.value)
    assert "weights_only" not in message and "\n" not in message
    assert message.startswith(f"checkpoint {garbage} cannot be read: ")
