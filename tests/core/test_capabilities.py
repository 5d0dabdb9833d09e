"""Capabilities: what components offer each other beyond batch attributes, checked when a run
is composed, before any weights are loaded, anything is featurized or a file is written; the
``auto`` choices that use them; and how ``protsteps plugins`` lists them."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from protsteps import (
    Batch,
    BuildContext,
    Component,
    Encoder,
    EncoderOutput,
    PretextTask,
    TaskOutput,
    Teacher,
    hookimpl,
    option,
    registry,
)
from protsteps.cli import main
from protsteps.components import Need
from protsteps.errors import ComponentUnavailableError, CompositionError
from protsteps.model import compose
from protsteps.registry import ENTRY_POINT_GROUP, Catalog
from protsteps.runconfig import load_run_config
from protsteps.scatter import scatter_mean

#: how many times each fake teacher's factory ran
BUILT: dict[str, int] = {}


@dataclasses.dataclass
class _NoSettings:
    pass


@dataclasses.dataclass
class _Width:
    width: int = option(8, "Embedding width.")


class PooledEncoder(Encoder):
    """Per-protein embeddings only: ``node`` is ``None``."""

    def __init__(self, config: _Width, context: BuildContext) -> None:
        super().__init__()
        self.out_dim = config.width
        self.embed = nn.Embedding(32, config.width)

    def forward(self, batch: Batch, teacher_features=None) -> EncoderOutput:
        h = self.embed(batch.residue_type)
        return EncoderOutput(node=None, graph=scatter_mean(h, batch.batch, batch.num_graphs))  # type: ignore[arg-type]


class SilentPooledEncoder(PooledEncoder):
    """The same encoder, its capabilities on the object instead of the registration."""

    capabilities = frozenset({"per_protein"})


class VectorTask(PretextTask):
    """Needs per-residue vector features (no built-in encoder returns them)."""

    def __init__(self, config: _NoSettings, context: BuildContext) -> None:
        super().__init__()

    def forward(self, batch, output, state=None) -> TaskOutput:  # pragma: no cover - never composed
        return TaskOutput(loss=output.vectors.pow(2).mean())


class ProteinNormTask(PretextTask):
    """A task on the per-protein embedding only."""

    def __init__(self, config: _NoSettings, context: BuildContext) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch, output, state=None) -> TaskOutput:
        return TaskOutput(loss=(self.scale * output.graph).pow(2).mean())


class BlosumTeacher(Teacher):
    """Fixed residue profiles: no trainable tail."""

    embed_dim = 20

    def __init__(self, config: _NoSettings, context: BuildContext, *, name: str = "blosum") -> None:
        super().__init__()
        BUILT[name] = BUILT.get(name, 0) + 1

    def tail_parameters(self):
        return {}

    def forward(self, sequences, tail=None):
        return torch.zeros(sum(len(s) for s in sequences), self.embed_dim)


class TailedTeacher(BlosumTeacher):
    """A linear tail over the fixed profiles."""

    def __init__(self, config: _NoSettings, context: BuildContext) -> None:
        super().__init__(config, context, name="tailed")
        self.tail = nn.Linear(20, 20)

    def tail_parameters(self):
        return dict(self.tail.named_parameters())


def _offline(config, context):
    BUILT["offline"] = BUILT.get("offline", 0) + 1
    raise ComponentUnavailableError("offline: its weights are not on this machine")


class _Pairwise:
    """A scheme that contrasts the proteins of a batch (never stepped here)."""

    def __init__(self, config, context) -> None:
        pass


class _CapabilityPlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        return [
            Component("pooled", PooledEncoder, _Width, "Per-protein only.", capabilities=["per_protein"]),
            Component("silent_pooled", SilentPooledEncoder, _Width, "Per-protein only, undeclared."),
        ]

    @hookimpl
    def protsteps_register_tasks(self):
        return [
            Component("vector_norm", VectorTask, _NoSettings, "Needs vectors.", needs=["encoder.vectors"]),
            Component(
                "protein_norm", ProteinNormTask, _NoSettings, "Per-protein.", needs=["encoder.per_protein"]
            ),
        ]

    @hookimpl
    def protsteps_register_teachers(self):
        return [
            Component("blosum", BlosumTeacher, _NoSettings, "No tail.", capabilities=[], auto=-5),
            Component("blosum_undeclared", BlosumTeacher, _NoSettings, "No tail, undeclared."),
            Component("offline", _offline, _NoSettings, "Cannot be built here.", auto=1),
            Component("tailed", TailedTeacher, _NoSettings, "With a tail.", capabilities=["tail"], auto=5),
        ]

    @hookimpl
    def protsteps_register_schemes(self):
        return [
            Component(
                "pairwise",
                _Pairwise,
                _NoSettings,
                "Contrasts the batch's proteins.",
                needs=[Need("batch>=2", "or use --scheme joint")],
            )
        ]


@pytest.fixture
def catalog(monkeypatch) -> Catalog:
    """The built-in plugins but the real teachers (teacher auto must not download), plus the
    fakes, as the default catalog."""
    BUILT.clear()
    plugins: dict[str, object] = {
        ep.name: ep.load()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.name not in ("esm", "protbert")
    }
    plugins["fake"] = _CapabilityPlugin()
    made = Catalog.from_plugins(plugins)
    assert not made.failures, made.failures
    monkeypatch.setattr(registry, "_DEFAULT", made)
    return made


MISCOMPOSITIONS = {
    "encoder without per-residue output, distance task": (
        ["--encoder", "pooled", "--task", "distance", "--teacher", "none", "--scheme", "joint"],
        "task 'distance' needs per-residue embeddings (EncoderOutput.node) from the encoder, which encoder "
        "'pooled' does not offer (it offers: per_protein); use an encoder that offers 'per_residue', or "
        "another task",
    ),
    "task needing vector features": (
        ["--encoder", "gin", "--task", "vector_norm", "--teacher", "none", "--scheme", "joint"],
        "task 'vector_norm' needs vector features with irreps (EncoderOutput.vectors) from the encoder, "
        "which encoder 'gin' does not offer (it offers: per_protein, per_residue, structure); use "
        "an encoder that offers 'vectors', or another task",
    ),
    "teacher without a tail under pseudo_bilevel": (
        ["--teacher", "blosum", "--scheme", "pseudo_bilevel"],
        "scheme 'pseudo_bilevel' needs a trainable tail (Teacher.tail_parameters) from the teacher, which "
        "teacher 'blosum' does not offer (it offers: nothing); use a teacher that offers 'tail', or "
        "another scheme",
    ),
    "no teacher under pseudo_bilevel": (
        ["--teacher", "none", "--scheme", "pseudo_bilevel"],
        "scheme 'pseudo_bilevel' needs a teacher, and the run has none (teacher = \"none\"); name one "
        "with --teacher NAME, or use another scheme",
    ),
    "encoder without the structure view under pseudo_bilevel": (
        [
            "--encoder",
            "pooled",
            "--task",
            "protein_norm",
            "--teacher",
            "tailed",
            "--scheme",
            "pseudo_bilevel",
        ],
        "scheme 'pseudo_bilevel' needs the structure view before the teacher residual "
        "(EncoderOutput.structure) from the encoder, which encoder 'pooled' does not offer (it offers: "
        "per_protein); use an encoder that offers 'structure', or another scheme; or set "
        'scheme.structure_view = "embedding"',
    ),
    "in-batch negatives with one protein per batch": (
        ["--teacher", "tailed", "--scheme", "pseudo_bilevel", "--batch-size", "1"],
        "scheme 'pseudo_bilevel' needs batches of at least 2 proteins, and [train] batch_size is 1; set "
        '--batch-size 2 or more; or set scheme.negatives = "previous"',
    ),
    "a plugin scheme that needs two proteins per batch": (
        ["--teacher", "none", "--scheme", "pairwise", "--batch-size", "1"],
        "scheme 'pairwise' needs batches of at least 2 proteins, and [train] batch_size is 1; set "
        "--batch-size 2 or more; or use --scheme joint",
    ),
}


@pytest.mark.parametrize("case", list(MISCOMPOSITIONS))
def test_each_miscomposition_is_one_line_before_anything_is_featurized_or_written(
    catalog, case, tmp_path, capsys, small_structures
):
    options, message = MISCOMPOSITIONS[case]
    out, cache = tmp_path / "run", tmp_path / "cache"
    inputs = [str(p) for p in small_structures[:2]]
    code = main(["pretrain", *inputs, "--out", str(out), "--cache-dir", str(cache), "-q", *options])
    assert code != 0
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists() and not cache.exists()  # no config.toml, nothing featurized
    assert "blosum" not in BUILT  # a declared capability is checked before the teacher is built


def test_the_old_first_step_crash_is_now_refused_at_composition(catalog):
    """An encoder without per-residue output and the distance task failed at the first
    training step with AttributeError: 'NoneType' object has no attribute 'new_zeros'."""
    config = load_run_config(
        None,
        catalog,
        components={"encoder": "pooled", "teacher": "none", "scheme": "joint"},
        tasks=["distance"],
    )
    with pytest.raises(CompositionError, match=r"^task 'distance' needs per-residue embeddings"):
        compose(config, catalog)


def test_capabilities_not_declared_are_read_from_the_built_component(catalog):
    config = load_run_config(
        None, catalog, components={"encoder": "silent_pooled", "teacher": "none", "scheme": "joint"}
    )
    with pytest.raises(CompositionError, match="which encoder 'silent_pooled' does not offer"):
        compose(config, catalog)
    config = load_run_config(
        None, catalog, components={"teacher": "blosum_undeclared", "scheme": "pseudo_bilevel"}
    )
    # refused when composed (not in the scheme's setup, as before), naming no ESM setting
    with pytest.raises(CompositionError) as caught:
        compose(config, catalog)
    assert "teacher 'blosum_undeclared' does not offer (it offers: nothing)" in str(caught.value)
    assert "trainable_layers" not in str(caught.value)
    assert BUILT["blosum"] == 1  # undeclared: known only once built


def test_a_composition_that_fits_is_built_and_steps(catalog):
    config = load_run_config(
        None,
        catalog,
        components={"encoder": "pooled", "teacher": "none", "scheme": "joint"},
        tasks=["protein_norm"],
    )
    composition = compose(config, catalog)
    assert list(composition.model.tasks) == ["protein_norm"]


def test_teacher_auto_tries_plugins_in_their_declared_order_using_capabilities(catalog):
    # pseudo_bilevel needs a tail: blosum (-5, no tail) and offline (1, cannot be built) are passed over
    config = load_run_config(None, catalog, components={"teacher": "auto", "scheme": "pseudo_bilevel"})
    composition = compose(config, catalog)
    assert composition.config.teacher.name == "tailed"
    note = composition.notes[0]
    assert note.startswith("teacher auto -> tailed")
    assert "blosum: scheme 'pseudo_bilevel' needs a trainable tail" in note
    assert "offline: offline: its weights are not on this machine" in note
    assert "blosum" not in BUILT and BUILT["offline"] == 1
    # joint needs nothing of the teacher: the first in order wins
    config = load_run_config(None, catalog, components={"teacher": "auto", "scheme": "joint"})
    composition = compose(config, catalog)
    assert composition.config.teacher.name == "blosum"
    assert composition.notes[0] == "teacher auto -> blosum (_NoSettings)"


def test_scheme_auto_takes_the_first_scheme_whose_needs_are_met(catalog):
    config = load_run_config(None, catalog, components={"teacher": "blosum", "scheme": "auto"})
    composition = compose(config, catalog)
    assert composition.config.scheme.name == "joint"
    assert composition.notes[-1].startswith(
        "scheme auto -> joint (passed over: scheme 'pseudo_bilevel' needs a trainable tail"
    )
    config = load_run_config(None, catalog, components={"teacher": "tailed", "scheme": "auto"})
    composition = compose(config, catalog)
    assert composition.config.scheme.name == "pseudo_bilevel"
    assert composition.notes[-1] == "scheme auto -> pseudo_bilevel (with teacher)"


class _BadDeclarations:
    @hookimpl
    def protsteps_register_tasks(self):
        return [Component("gpu_task", ProteinNormTask, _NoSettings, "Bad need.", needs=["gpu"])]

    @hookimpl
    def protsteps_register_encoders(self):
        return [Component("loud", PooledEncoder, _Width, "Bad auto.", auto=1)]


def test_declarations_that_cannot_be_read_are_plugin_failures():
    catalog = Catalog.from_plugins({"bad": _BadDeclarations()})
    messages = sorted(str(f) for f in catalog.failures)
    assert messages == [
        "plugin 'bad' failed to load: encoder 'loud' of plugin 'bad': only teachers and schemes take part in 'auto'",
        "plugin 'bad' failed to load: task 'gpu_task' of plugin 'bad': need 'gpu' is not 'teacher', "
        "'teacher.CAPABILITY', 'encoder.CAPABILITY' or 'batch>=N'",
    ]


def test_plugins_json_lists_requires_capabilities_needs_and_a_json_schema(catalog, capsys):
    assert main(["plugins", "--json"]) == 0
    listed = {(e["kind"], e["name"]): e for e in json.loads(capsys.readouterr().out)}
    distance = listed[("task", "distance")]
    assert distance["requires"] == ["pos"]
    assert distance["needs"] == ["encoder.per_residue"]
    assert distance["capabilities"] == []
    schema = distance["config_schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["num_pairs"]["type"] == "integer"
    assert schema["properties"]["num_pairs"]["default"] == 256
    assert schema["properties"]["num_pairs"]["description"].startswith("Residue pairs drawn")
    pseudo = listed[("scheme", "pseudo_bilevel")]
    assert pseudo["needs"] == ["teacher", "teacher.tail", "encoder.structure", "batch>=2"]
    assert pseudo["auto"] == 0 and listed[("scheme", "joint")]["auto"] == 10
    assert pseudo["config_schema"]["properties"]["negatives"]["enum"] == ["in_batch", "previous"]
    assert pseudo["config_schema"]["properties"]["inner_lr"]["type"] == ["number", "null"]
    assert listed[("encoder", "gin")]["capabilities"] == ["per_protein", "per_residue", "structure"]
    assert listed[("encoder", "silent_pooled")]["capabilities"] is None  # read from the built encoder
    # what the featurizer fills under its default settings (radius edges, no edge features)
    assert listed[("featurizer", "residue_graph")]["provides"] == [
        "backbone",
        "dihedrals",
        "edge_distance",
        "edge_index",
        "edge_vector",
        "pos",
        "residue_type",
    ]
    assert listed[("teacher", "tailed")]["capabilities"] == ["tail"]


def test_plugins_show_lists_the_declarations(catalog, capsys):
    assert main(["plugins", "show", "scheme", "pseudo_bilevel"]) == 0
    out = capsys.readouterr().out
    assert "needs (under the default settings): teacher, teacher.tail, encoder.structure, batch>=2" in out
    assert "auto: tried at place 0 (lower first)" in out
    assert main(["plugins", "show", "encoder", "pooled"]) == 0
    out = capsys.readouterr().out
    assert "capabilities: per_protein" in out and "needs: none" in out


def test_the_esm_teachers_tail_depends_on_its_settings():
    esm = pytest.importorskip("protsteps_esm.hooks")
    (entry,) = Catalog.from_plugins({"esm": esm}).entries("teacher")
    from protsteps.capabilities import declared_capabilities
    from protsteps_esm._config import ESMConfig

    assert declared_capabilities(entry, ESMConfig()) == {"tail"}
    assert declared_capabilities(entry, ESMConfig(trainable_layers=0)) == frozenset()
    assert entry.auto == 0


def test_the_pooled_encoder_really_has_no_per_residue_output(tmp_path: Path):
    """The fake pooled encoder really has no per-residue output (what the check protects)."""
    from protsteps import collate, featurize

    graphs = featurize(Path(__file__).parents[2] / "core/protsteps/examples/structures/1A8O.cif")
    output = PooledEncoder(_Width(), BuildContext())(collate(list(graphs)))
    assert output.node is None and output.graph.shape == (len(graphs), 8)


def test_embed_per_residue_refuses_an_encoder_without_it_before_featurizing(
    catalog, tmp_path, small_structures
):
    from protsteps.downstream import embed
    from protsteps.export import encoder_record

    config = load_run_config(
        None,
        catalog,
        components={"encoder": "pooled", "teacher": "none", "scheme": "joint"},
        tasks=["protein_norm"],
    )
    composition = compose(config, catalog)
    path = tmp_path / "encoder.pt"
    torch.save(encoder_record(composition.model.encoder, composition.config, None), path)
    cache = tmp_path / "graphs"
    with pytest.raises(CompositionError) as caught:
        embed(small_structures[:1], path, per_residue=True, cache_dir=cache, catalog=catalog)
    assert str(caught.value) == (
        "embed --per-residue needs per-residue embeddings (EncoderOutput.node) from the encoder, which "
        "encoder 'pooled' does not offer (it offers: per_protein)"
    )
    assert not cache.exists()
    # per-protein embeddings are what it offers
    result = embed(small_structures[:1], path, cache_dir=cache, catalog=catalog)
    assert result.embeddings.shape == (1, 8)
