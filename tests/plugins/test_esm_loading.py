"""Loading ESM-2 weights: fair-esm's on-disk format, the allow-list, where weights are
looked for, and the fast offline failure that teacher ``auto`` relies on."""

from __future__ import annotations

import argparse
import http.server
import os
import pickle
import socket
import threading
import time
from pathlib import Path

import esm
import pytest
import torch

import protsteps
import protsteps_esm
from protsteps.errors import ComponentUnavailableError
from protsteps_esm import CheckpointError, load_esm2, read_checkpoint
from protsteps_esm import _loading as loading
from protsteps_esm.testing import esm2_checkpoint, write_esm2_checkpoint

#: tiny models: see the ``one_thread`` fixture
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_esm2_checkpoint(tmp_path_factory.mktemp("esm") / "tiny.pt", num_layers=2, embed_dim=32)


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub folder, so no weights of this machine are found."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


class _Exploit:
    """Pickles into a call of os.system: what a malicious 'weights' file would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_has_fair_esm_layout(tiny: Path) -> None:
    # torch's default (weights_only=True) refuses it, exactly like a released ESM-2 file
    with pytest.raises(pickle.UnpicklingError, match=r"argparse\.Namespace"):
        torch.load(tiny, weights_only=True)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tiny)) == ["argparse.Namespace"]
    data = read_checkpoint(tiny)
    assert set(data) == {"model", "cfg"}
    cfg = data["cfg"]["model"]
    assert isinstance(cfg, argparse.Namespace)
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads, cfg.token_dropout) == (
        2,
        32,
        4,
        True,
    )
    names = set(data["model"])
    assert "encoder.sentence_encoder.embed_tokens.weight" in names
    assert "encoder.sentence_encoder.layers.1.self_attn.rot_emb.inv_freq" in names
    assert "encoder.sentence_encoder.emb_layer_norm_after.weight" in names
    assert "encoder.lm_head.dense.weight" in names
    assert all(n.startswith(("encoder.sentence_encoder.", "encoder.lm_head.")) for n in names)
    assert not any("contact_head" in n for n in names)


@pytest.mark.filterwarnings("ignore:Regression weights not found")
def test_checkpoint_builds_with_fair_esm_core(tiny: Path) -> None:
    # fair-esm's own loader accepts the dict unchanged (its v2 upgrade strips the prefixes)
    data = read_checkpoint(tiny)
    model, _ = esm.pretrained.load_model_and_alphabet_core("esm2_tiny", data, None)
    stored = read_checkpoint(tiny)["model"]
    for name, tensor in model.state_dict().items():
        if name.startswith("contact_head."):
            continue
        prefix = "encoder." if name.startswith("lm_head.") else "encoder.sentence_encoder."
        torch.testing.assert_close(tensor, stored[prefix + name], rtol=0, atol=0)


def test_local_file_loads_by_path(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny))
    assert isinstance(teacher, protsteps.Teacher)
    assert (teacher.num_layers, teacher.embed_dim, teacher.source) == (2, 32, "file")
    assert teacher.model_name == "tiny"
    stored = read_checkpoint(tiny)["model"]
    torch.testing.assert_close(
        teacher.esm.layers[1].fc1.weight, stored["encoder.sentence_encoder.layers.1.fc1.weight"]
    )
    assert teacher(["MKTAYIAKQR", "GSH"]).shape == (13, 32)


def test_legacy_serialization_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(esm2_checkpoint(), path, _use_new_zipfile_serialization=False)
    assert load_esm2("esm2_t6_8M_UR50D", weights=path).model.num_layers == 2


def test_half_precision_file_loads(tmp_path: Path) -> None:
    path = write_esm2_checkpoint(tmp_path / "half.pt", dtype=torch.float16)
    model = load_esm2("esm2_t6_8M_UR50D", weights=path).model
    assert model.embed_tokens.weight.dtype == torch.float32


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_foreign_pickled_object_is_refused_without_running_it(tmp_path: Path, zipped: bool) -> None:
    marker = tmp_path / "exploited"
    data = esm2_checkpoint()
    data["extra"] = _Exploit(marker)
    path = tmp_path / "evil.pt"
    torch.save(data, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as info:
        protsteps.build("teacher", "esm", weights=str(path))
    message = str(info.value)
    assert str(path) in message and "posix.system" in message and "refusing" in message
    assert not marker.exists()


def test_only_the_namespace_is_allow_listed() -> None:
    assert protsteps_esm.ALLOWED_GLOBALS == (argparse.Namespace,)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a checkpoint\n", "not a PyTorch checkpoint (its bytes are not a torch.save file)"),
        (b"# protsteps\n\nStructure-aware protein", "its bytes are not a torch.save file"),
        (pickle.dumps({"a": 1}, protocol=4), "a pickle that torch cannot read with weights_only=True"),
        ({"model": {"w": torch.ones(1)}}, "no 'cfg'"),
        ({"args": argparse.Namespace(arch="roberta_large"), "model": {}}, "an ESM-1 or ESM-1b file?"),
        ({"model": {}, "cfg": {"model": {"encoder_layers": 2}}}, "argparse.Namespace"),
        ({"model": {}, "cfg": {"model": argparse.Namespace(encoder_layers=2)}}, "lacks encoder_embed_dim"),
        ([1, 2, 3], "holds a list"),
    ],
)
def test_bad_files_are_named_with_the_reason(tmp_path: Path, content: object, reason: str) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert "weights_only=False" not in str(info.value)  # torch's advice is not ours to give


def test_truncated_checkpoint_is_named_as_such(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.pt"
    content = tiny.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(
        CheckpointError, match=r"truncated\.pt: not a PyTorch checkpoint \(a damaged or truncated"
    ):
        read_checkpoint(path)


def test_missing_parameter_is_reported_by_fair_esm_check(tmp_path: Path) -> None:
    data = esm2_checkpoint()
    del data["model"]["encoder.sentence_encoder.layers.1.fc2.weight"]
    path = tmp_path / "incomplete.pt"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"incomplete\.pt.*Missing key.*layers\.1\.fc2\.weight"):
        load_esm2("esm2_t6_8M_UR50D", weights=path)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(ComponentUnavailableError, match=r"nowhere\.pt does not exist"):
        protsteps.build("teacher", "esm", weights=str(tmp_path / "nowhere.pt"))
    with pytest.raises(ComponentUnavailableError, match=r"is a folder, not a file"):
        protsteps.build("teacher", "esm", weights=str(tmp_path))


def test_weights_from_the_hub_cache(tiny: Path, hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub cache must be used without touching the network")

    monkeypatch.setattr(loading, "probe", no_network)
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / "esm2_t12_35M_UR50D.pt").write_bytes(tiny.read_bytes())
    teacher = protsteps.build("teacher", "esm", model="esm2_t12_35M_UR50D")
    assert (teacher.source, teacher.model_name) == ("hub cache", "esm2_t12_35M_UR50D")
    assert teacher.weights_path == hub_dir / "checkpoints" / "esm2_t12_35M_UR50D.pt"


def _assert_unavailable_line(message: str, hub_dir: Path) -> None:
    assert "\n" not in message
    assert "esm2_t6_8M_UR50D" in message
    assert str(hub_dir / "checkpoints" / "esm2_t6_8M_UR50D.pt") in message
    assert "--set teacher.weights=PATH" in message and "--teacher none" in message


def test_offline_default_fails_fast_with_one_line(hub_dir: Path) -> None:
    """The real download URL, on this (offline) machine: the path teacher ``auto`` takes."""
    if loading.probe(loading.MODEL_URL.format(name="esm2_t6_8M_UR50D")) is None:
        pytest.skip("fair-esm's download site is reachable from here")
    start = time.monotonic()
    with pytest.raises(ComponentUnavailableError) as info:
        protsteps.build("teacher", "esm")
    assert time.monotonic() - start < 10
    _assert_unavailable_line(str(info.value), hub_dir)
    assert "cannot be reached" in str(info.value)
    assert not (hub_dir / "checkpoints" / "esm2_t6_8M_UR50D.pt").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection_fails_fast(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "MODEL_URL", f"http://127.0.0.1:{_closed_port()}/{{name}}.pt")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    start = time.monotonic()
    with pytest.raises(ComponentUnavailableError) as info:
        protsteps.build("teacher", "esm")
    assert time.monotonic() - start < 10
    _assert_unavailable_line(str(info.value), hub_dir)
    assert "127.0.0.1 cannot be reached" in str(info.value)


def test_probe_gives_up_on_a_silent_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network that drops packets (or a DNS that never answers) must not hang the build."""

    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(30)

    monkeypatch.setattr(loading.socket, "create_connection", hang)
    start = time.monotonic()
    reason = loading.probe("https://example.invalid/x.pt", timeout=0.5)
    assert time.monotonic() - start < 3
    assert reason == "example.invalid did not answer within 0.5 s"


def test_download_off_never_touches_the_network(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("download = false must not probe")

    monkeypatch.setattr(loading, "probe", no_network)
    with pytest.raises(ComponentUnavailableError) as info:
        protsteps.build("teacher", "esm", download=False)
    _assert_unavailable_line(str(info.value), hub_dir)
    assert "downloading is off (teacher.download = false)" in str(info.value)


def test_download_into_the_hub_cache(
    tiny: Path, hub_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fair-esm's download path, served from this machine: the file lands where fair-esm
    would put it, the contact-regression companion is not asked for, and the next build
    finds it in the cache."""
    served = tmp_path / "site"
    served.mkdir()
    (served / "esm2_t6_8M_UR50D.pt").write_bytes(tiny.read_bytes())
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        monkeypatch.setattr(loading, "MODEL_URL", f"http://127.0.0.1:{port}/{{name}}.pt")
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.delenv(var, raising=False)
        teacher = protsteps.build("teacher", "esm")
        assert teacher.source == "download"
        cached = hub_dir / "checkpoints" / "esm2_t6_8M_UR50D.pt"
        assert cached.read_bytes() == tiny.read_bytes()
        assert requests == ["/esm2_t6_8M_UR50D.pt"]
        assert protsteps.build("teacher", "esm").source == "hub cache"
        assert len(requests) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_missing_file_on_the_download_site(
    hub_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setattr(loading, "MODEL_URL", f"http://127.0.0.1:{port}/{{name}}.pt")
        for var in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.delenv(var, raising=False)
        with pytest.raises(ComponentUnavailableError, match="HTTP 404") as info:
            protsteps.build("teacher", "esm")
        _assert_unavailable_line(str(info.value), hub_dir)
        assert not (hub_dir / "checkpoints" / "esm2_t6_8M_UR50D.pt").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_registered_with_every_esm2_model() -> None:
    entry = protsteps.get_component("teacher", "esm")
    model_field = next(f for f in protsteps.config.fields_of(entry.config) if f.name == "model")
    assert set(model_field.choices or ()) == set(protsteps_esm.ESM2_MODELS)
    assert model_field.default == "esm2_t6_8M_UR50D"
    assert entry.plugin == "esm"
