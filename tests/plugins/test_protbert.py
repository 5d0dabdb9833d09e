"""The ProtBert teacher: equality with transformers' BertModel, alignment with residues, the
authors' residue handling, windows, the shared trunk cache, replacement tails, offline
errors, and pretraining with it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import protsteps  # noqa: E402
from protsteps.cli import main  # noqa: E402
from protsteps.errors import ComponentUnavailableError, ConfigError  # noqa: E402
from protsteps.export import load_encoder  # noqa: E402
from protsteps.teachers import assert_rows_line_up, windows  # noqa: E402
from protsteps_esm.testing import structure_sequences  # noqa: E402
from protsteps_protbert import ProtBertTeacher, WeightsError  # noqa: E402
from protsteps_protbert.testing import PROTBERT_VOCAB, write_protbert  # noqa: E402

#: with 130 positions the longest window is 128 residues, so real chains need windows
MAX_POSITIONS = 130
#: (file, chain, residues kept): cut to fit the tiny model's 128 positions at different lengths
SHORT = (
    ("biopython/1A8O.cif", "A", 70),  # with selenomethionines (MSE) read as X
    ("masif/1t6b_X.pdb.gz", "X", 125),
    ("db55_unbound/1AK4_l_u.pdb.gz", None, 100),
    ("mdanalysis/5PTI.cif.gz", "A", 58),
)
#: the authors' preprocessing (build_protein.py): rare residues become X
RARE = re.compile(r"[UZOB]")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer BERT with ProtBert's vocabulary, saved with save_pretrained; dropout
    0.1 so that a teacher that let it act would give different results per call."""
    return write_protbert(
        tmp_path_factory.mktemp("protbert") / "prot_bert_tiny", max_positions=MAX_POSITIONS, dropout=0.1
    )


@pytest.fixture(scope="module")
def reference(folder: Path):
    """transformers' own BertModel and BertTokenizer, loaded apart from the teacher."""
    model = transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    tokenizer = transformers.BertTokenizer.from_pretrained(folder, do_lower_case=False)
    return model, tokenizer


def bert_rows(reference, sequences: list[str], *, batched: bool) -> torch.Tensor:
    """last_hidden_state as the authors computed it: rare residues -> X, residues separated by
    spaces, the tokenizer's [CLS] ... [SEP], [CLS]/[SEP] dropped; batched with the tokenizer's
    padding and attention mask, or one sequence at a time."""
    model, tokenizer = reference
    spaced = [" ".join(RARE.sub("X", s)) for s in sequences]
    groups = [spaced] if batched else [[s] for s in spaced]
    rows = []
    with torch.no_grad():
        for group in groups:
            encoded = tokenizer(group, return_tensors="pt", padding=True)
            hidden = model(**encoded).last_hidden_state
            rows += [hidden[b, 1 : len(s.split()) + 1] for b, s in enumerate(group)]
    return torch.cat(rows)


@pytest.fixture(scope="module")
def real_sequences(structures_dir: Path) -> list[str]:
    out = []
    for name, chain, keep in SHORT:
        chains = structure_sequences(structures_dir / name)
        out.append((chains[chain] if chain else next(iter(chains.values())))[:keep])
    return out


@pytest.mark.parametrize("cache", [False, True], ids=["uncached", "cached"])
def test_equals_bert_model_with_and_without_padding(folder, reference, real_sequences, cache) -> None:
    assert "X" in real_sequences[0] and [len(s) for s in real_sequences] == [70, 125, 100, 58]
    teacher = protsteps.build("teacher", "protbert", weights=str(folder), cache=cache)
    alone = bert_rows(reference, real_sequences, batched=False)
    padded = bert_rows(reference, real_sequences, batched=True)
    for _ in range(2):  # the second time from the trunk cache or the last trunk
        out = teacher(real_sequences)
        assert out.shape == (sum(map(len, real_sequences)), 32)
        torch.testing.assert_close(out, alone, rtol=0, atol=1e-5)
        torch.testing.assert_close(out, padded, rtol=0, atol=1e-5)
    # a sequence's rows do not depend on what it is batched with
    one_each = protsteps.build("teacher", "protbert", weights=str(folder), cache=cache, max_tokens=1)
    torch.testing.assert_close(one_each(real_sequences), out, rtol=0, atol=1e-5)


def test_rows_line_up_with_a_featurized_batch(folder, structures_dir) -> None:
    graphs = [
        *protsteps.featurize(structures_dir / "biopython" / "1A8O.cif"),
        *protsteps.featurize(structures_dir / "masif" / "1t6b_X.pdb.gz"),
        *protsteps.featurize(structures_dir / "mdanalysis" / "5PTI.cif.gz"),
    ]
    assert_rows_line_up(protsteps.build("teacher", "protbert", weights=str(folder)), graphs)


def test_rare_residues_and_unknown_characters_are_x(folder, reference) -> None:
    teacher = protsteps.build("teacher", "protbert", weights=str(folder))
    assert teacher.normalize("mkUZOB*j-1") == "MKXXXXXXXX"
    torch.testing.assert_close(teacher(["MKUZOBJ*AC"]), teacher(["MKXXXXXXAC"]), rtol=0, atol=0)
    assert not torch.allclose(teacher(["MKUZOBJ*AC"]), teacher(["MKLLLLLLAC"]))
    # the teacher's tokens are the tokenizer's for the spaced sequence, [CLS] ... [SEP]
    _, tokenizer = reference
    seq = "MKTAYWHCXUZOB"
    expected = tokenizer(" ".join(RARE.sub("X", seq)))["input_ids"]
    assert teacher._tokens([teacher.normalize(seq)])[0].tolist() == expected
    assert expected[0] == PROTBERT_VOCAB.index("[CLS]") and expected[-1] == PROTBERT_VOCAB.index("[SEP]")


def test_long_real_chain_through_windows(folder, reference, structures_dir) -> None:
    long_chain = structure_sequences(structures_dir / "db55_unbound" / "1HE8_r_u.pdb.gz")["A"]
    assert len(long_chain) == 839
    teacher = protsteps.build("teacher", "protbert", weights=str(folder), cache=False)
    assert (teacher.window, teacher.stride) == (MAX_POSITIONS - 2, (MAX_POSITIONS - 2) // 2)
    out = teacher([long_chain, "MKTAY"])
    assert out.shape == (844, 32)
    total, count = torch.zeros(839, 32), torch.zeros(839, 1)
    for a, b in windows(839, teacher.window, teacher.stride):
        total[a:b] += bert_rows(reference, [long_chain[a:b]], batched=False)
        count[a:b] += 1
    assert count.min() == 1 and count.max() == 3
    torch.testing.assert_close(out[:839], total / count, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[839:], bert_rows(reference, ["MKTAY"], batched=False), rtol=0, atol=1e-5)


def test_trunk_cache_hits_skip_the_trunk(folder, real_sequences, tmp_path, monkeypatch) -> None:
    teacher = protsteps.build("teacher", "protbert", weights=str(folder), cache_dir=str(tmp_path))
    first = teacher(real_sequences)
    assert teacher.cache is not None and (teacher.cache.misses, teacher.cache.hits) == (4, 0)
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 4
    assert files[0].relative_to(tmp_path).parts[:3] == (
        "prot_bert_tiny",
        teacher.trunk_fingerprint[:16],
        "trunk2",
    )

    def no_trunk(tokens):
        raise AssertionError("the trunk ran although its states were cached")

    monkeypatch.setattr(teacher, "_trunk", no_trunk)
    torch.testing.assert_close(teacher(real_sequences), first, rtol=0, atol=0)
    assert (teacher.cache.misses, teacher.cache.hits) == (4, 4)
    # another teacher on the same folder reads the states from disk
    second = protsteps.build("teacher", "protbert", weights=str(folder), cache_dir=str(tmp_path))
    monkeypatch.setattr(second, "_trunk", no_trunk)
    torch.testing.assert_close(second(real_sequences), first, rtol=0, atol=1e-6)
    assert second.cache is not None and second.cache.disk_hits == 4
    # another cut of the model has another key
    deeper = protsteps.build("teacher", "protbert", weights=str(folder), trainable_layers=2)
    assert deeper.trunk_fingerprint != teacher.trunk_fingerprint


def test_tail_is_the_last_bert_layer_by_bert_model_names(folder, reference) -> None:
    teacher = protsteps.build("teacher", "protbert", weights=str(folder))
    assert (teacher.layer, teacher.trunk_layers, teacher.num_layers) == (3, 2, 3)
    model, _ = reference
    names = {n for n, _ in model.named_parameters() if n.startswith("encoder.layer.2.")}
    assert set(teacher.tail_parameters()) == names and len(names) == 16
    assert "encoder.layer.2.attention.self.query.weight" in names
    # the module's parameters, state_dict included, are the tail only; the trunk is frozen
    assert {id(p) for p in teacher.parameters()} == {id(p) for p in teacher.tail_parameters().values()}
    assert all(name.startswith("tail.encoder.layer.2.") for name in teacher.state_dict())
    trunk = [p for n, p in teacher.bert.named_parameters() if not n.startswith("encoder.layer.2.")]
    assert trunk and not any(p.requires_grad for p in trunk)
    assert "layer 3" in teacher.describe() and teacher.describe().startswith(
        "ProtBert prot_bert_tiny (3 layers"
    )


def test_no_dropout_in_train_mode(folder) -> None:
    """The config has dropout 0.1; the authors ran ProtBert in eval mode and so does the tail."""
    teacher = protsteps.build("teacher", "protbert", weights=str(folder), cache=False)
    seqs = ["MKTAYIAKQRQISFVKSHF", "GSHMLEKLW"]
    teacher.eval()
    expected = teacher(seqs)
    teacher.train()
    assert teacher.training and not teacher.tail.training and not teacher.bert.training
    torch.testing.assert_close(teacher(seqs), expected, rtol=0, atol=0)
    torch.testing.assert_close(teacher(seqs), expected, rtol=0, atol=0)


@pytest.mark.parametrize("cache", [False, True], ids=["uncached", "cached"])
def test_gradients_reach_the_tail_through_a_replacement(folder, cache) -> None:
    """The pseudo bi-level inner step: theta' = theta - alpha * grad, the outer loss through
    forward(tail=theta'); d(outer)/d(phi) includes the second-order term. Checked against
    central finite differences in double precision."""
    teacher = protsteps.build("teacher", "protbert", weights=str(folder), cache=cache).double()
    seqs = ["MKTAYIAKQRQISFVKSHF", "GSHMLEKLW"]
    theta = teacher.tail_parameters()
    torch.testing.assert_close(teacher(seqs, tail=dict(theta)), teacher(seqs), rtol=0, atol=0)
    target = torch.randn(28, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def outer(phi: torch.Tensor, create_graph: bool) -> torch.Tensor:
        inner = (teacher(seqs) * target).sum() * phi
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=create_graph)
        updated = {n: p - 0.1 * g for (n, p), g in zip(theta.items(), grads, strict=True)}
        return teacher(seqs, tail=updated).square().sum()

    phi = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(outer(phi, True), phi)
    eps = 1e-5
    plus = outer(torch.tensor(0.7 + eps, dtype=torch.float64), False).detach()
    minus = outer(torch.tensor(0.7 - eps, dtype=torch.float64), False).detach()
    assert analytic.abs() > 1e-3
    torch.testing.assert_close(analytic, (plus - minus) / (2 * eps), rtol=1e-4, atol=1e-6)

    # gradients reach every replacement tensor and none of the stored ones
    replacement = {n: p.detach().clone().requires_grad_(True) for n, p in theta.items()}
    teacher(seqs, tail=replacement).square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in replacement.values())
    assert all(p.grad is None for p in theta.values())
    with pytest.raises(ValueError, match=r"missing encoder\.layer\.2\.output\.dense\.weight"):
        teacher(
            seqs, tail={n: t for n, t in replacement.items() if n != "encoder.layer.2.output.dense.weight"}
        )


def test_a_folder_as_the_hub_serves_prot_bert_loads_the_same(folder, tmp_path) -> None:
    """Rostlab/prot_bert's own files: config.json, pytorch_model.bin of BertForMaskedLM,
    vocab.txt and a tokenizer_config.json, no tokenizer.json."""
    hub_like = tmp_path / "prot_bert"
    hub_like.mkdir()
    masked_lm = transformers.BertForMaskedLM.from_pretrained(folder)
    torch.save(masked_lm.state_dict(), hub_like / "pytorch_model.bin")
    shutil.copy(folder / "config.json", hub_like / "config.json")
    shutil.copy(folder / "vocab.txt", hub_like / "vocab.txt")
    (hub_like / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    seqs = ["MKTAYIAKQRQISFVKSHF", "GSHMLEKLW"]
    expected = protsteps.build("teacher", "protbert", weights=str(folder))(seqs)
    torch.testing.assert_close(
        protsteps.build("teacher", "protbert", weights=str(hub_like))(seqs), expected, rtol=0, atol=0
    )


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_missing_hf_cache_without_download_is_one_line(hf_cache, no_network) -> None:
    start = time.monotonic()
    with pytest.raises(ComponentUnavailableError) as caught:
        protsteps.build("teacher", "protbert", download=False)
    assert time.monotonic() - start < 5
    assert str(caught.value) == (
        f"ProtBert model 'Rostlab/prot_bert' is unavailable: not in the Hugging Face cache at {hf_cache} "
        "and downloading is off (teacher.download = false); use --set teacher.weights=DIR to load a "
        "local ProtBert folder (hf download Rostlab/prot_bert --local-dir DIR), or "
        "--teacher none to train without a teacher"
    )


def test_unreachable_hub_fails_within_seconds(hf_cache, monkeypatch) -> None:
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(ComponentUnavailableError) as caught:
        protsteps.build("teacher", "protbert", model="Rostlab/prot_bert_bfd")
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "ProtBert model 'Rostlab/prot_bert_bfd' is unavailable: not in the Hugging Face cache"
    )
    assert "the Hugging Face Hub cannot be reached: 127.0.0.1 cannot be reached" in message
    assert message.endswith("or --teacher none to train without a teacher")


def test_found_in_the_hf_cache_without_network(folder, hf_cache, no_network) -> None:
    """The cache layout from_pretrained writes: refs/main names the snapshot folder."""
    repo = hf_cache / "models--Rostlab--prot_bert"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    teacher = protsteps.build("teacher", "protbert")  # download allowed, but a cached model needs none
    assert isinstance(teacher, ProtBertTeacher)
    assert (teacher.model_name, teacher.weights_path, teacher.source) == (
        "Rostlab/prot_bert",
        snapshot,
        "hf cache",
    )
    seqs = ["MKTAYIAKQR"]
    by_folder = protsteps.build("teacher", "protbert", weights=str(folder))
    torch.testing.assert_close(teacher(seqs), by_folder(seqs), rtol=0, atol=0)
    # a snapshot without weights is not a cached model
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(ComponentUnavailableError, match="not in the Hugging Face cache"):
        protsteps.build("teacher", "protbert", download=False)


def test_missing_or_unusable_folders(folder, tmp_path, no_network) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ComponentUnavailableError) as caught:
        protsteps.build("teacher", "protbert", weights=str(missing))
    assert str(caught.value) == (
        f"ProtBert weights folder {missing} does not exist (teacher.weights); point it at a folder with "
        "config.json, the model weights and vocab.txt (as hf download or save_pretrained "
        "writes it), or use --teacher none to train without a teacher"
    )
    with pytest.raises(ComponentUnavailableError, match="is a file, not a folder"):
        protsteps.build("teacher", "protbert", weights=str(folder / "config.json"))
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(
        WeightsError, match=f"{partial}: not a ProtBert folder: no model.safetensors or pytorch_model.bin"
    ):
        protsteps.build("teacher", "protbert", weights=str(partial))
    # weights of another architecture: missing tensors are refused, not initialised at random
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    with pytest.raises(
        WeightsError, match=r"the weights lack tensors of the BERT model: encoder\.layer\.3\."
    ):
        protsteps.build("teacher", "protbert", weights=str(other))


def test_without_transformers_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ComponentUnavailableError) as caught:
        protsteps.build("teacher", "protbert")
    assert str(caught.value) == (
        "the ProtBert teacher is unavailable: the transformers package is not installed; install it "
        'with pip install -e ".[protbert]", or use --teacher none to train without a teacher'
    )


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"layer": 4}, "layer 4 is out of range: prot_bert_tiny has 3 transformer layers"),
        ({"layer": 1, "trainable_layers": 2}, "trainable_layers 2 must be in 0..1"),
        ({"window": MAX_POSITIONS - 1}, f"window {MAX_POSITIONS - 1} must be in 1..{MAX_POSITIONS - 2}"),
        ({"window": 20, "stride": 21}, "stride: 21 must be in 1..window"),
        ({"stride": 0}, "stride = 0 is out of range: it must be >= 1"),
        ({"max_tokens": 0}, "max_tokens = 0 is out of range: it must be >= 1"),
        ({"cache_mb": -1}, "cache_mb = -1 is out of range: it must be >= 0"),
    ],
)
def test_settings_that_cannot_work_are_refused(folder, values, error) -> None:
    with pytest.raises(ConfigError, match=error):
        protsteps.build("teacher", "protbert", weights=str(folder), **values)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", [None, "joint"], ids=["pseudo_bilevel", "joint"])
def test_pretrain_with_the_protbert_teacher(folder, small_structures, tmp_path, capsys, scheme) -> None:
    run = tmp_path / "run"
    args = [
        "pretrain",
        *map(str, small_structures[:3]),
        "--out",
        str(run),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--teacher",
        "protbert",
        "--set",
        f'teacher.weights="{folder}"',
        "--set",
        "encoder.hidden_dim=16",
        "--set",
        "tasks.distance.num_pairs=32",
        "--set",
        "train.valid_fraction=0",
    ]
    if scheme is not None:
        args += ["--scheme", scheme]
    assert main(args) == 0, capsys.readouterr().err
    summary = capsys.readouterr().out
    assert "teacher ProtBert prot_bert_tiny (3 layers, dim 32)" in summary
    assert "trainable tail: layer 3; trunk cache: 1024 MiB in memory" in summary
    config = (run / "config.toml").read_text()
    assert re.search(r'\[teacher\]\s*name = "protbert"', config)
    assert re.search(rf'\[scheme\]\s*name = "{scheme or "pseudo_bilevel"}"', config)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("split") == "train"]
    assert train and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    # the teacher fed the encoder (and, pseudo bi-level, the MI look-ahead through its tail)
    assert "mi" in train[-1] if scheme is None else "mi" not in train[-1]
    _, record = load_encoder(run)
    assert record["teacher"]["name"] == "protbert"
