"""Finding ESM-2 weights and loading them safely on any torch version.

fair-esm 2.0.0 reads checkpoints with ``torch.load``'s default, which since torch 2.6 is
``weights_only=True`` and refuses the ``argparse.Namespace`` every ESM-2 file pickles. We
read the file ourselves with ``weights_only=True`` and exactly that class allow-listed, then
hand the dict to fair-esm's own ``load_model_and_alphabet_core`` so that fair-esm's real
construction and state-dict upgrade code builds the model.

Where the weights come from, in order:

1. ``weights``: a local file (its stored configuration decides the architecture);
2. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<model>.pt``, where fair-esm itself
   puts downloads (so weights fetched by fair-esm earlier are found);
3. fair-esm's download URL, after a connectivity probe of a few seconds, into that cache.

The ``-contact-regression.pt`` companion that fair-esm also fetches is not needed: we never
predict contacts, so it is neither required nor downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import re
import socket  # noqa: F401  (the probe's connections: tests patch protsteps_esm._loading.socket)
import urllib.error
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import esm
import torch
from esm.model.esm2 import ESM2

from protsteps.errors import ComponentUnavailableError, ProtstepsError
from protsteps.teachers import PROBE_TIMEOUT_S, probe, tensor_fingerprint

__all__ = [
    "ALLOWED_GLOBALS",
    "MODEL_URL",
    "PROBE_TIMEOUT_S",
    "CheckpointError",
    "LoadedESM2",
    "hub_checkpoint_path",
    "read_checkpoint",
    "build_esm2",
    "load_esm2",
    "probe",
    "trunk_fingerprint",
]

#: the only non-tensor classes a released ESM-2 file pickles (``cfg["model"]`` and friends)
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

#: fair-esm 2.0.0's download location for model weights (``pretrained._download_model_and_regression_data``)
MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"

_CFG_FIELDS = ("encoder_layers", "encoder_embed_dim", "encoder_attention_heads", "token_dropout")
_WAYS_OUT = (
    "use --set teacher.weights=PATH to load a local ESM-2 file, or --teacher none to train without a teacher"
)


class CheckpointError(ProtstepsError):
    """A weights file exists but cannot be used: not a checkpoint, not ESM-2, or it pickles a
    class outside the allow-list. The message names the file and the reason."""


@dataclasses.dataclass
class LoadedESM2:
    """An ESM-2 model built by fair-esm from a checkpoint we read.

    ``name`` is the hub name for hub and downloaded weights and the file's stem for a local
    file; ``source`` says where the weights came from.
    """

    model: ESM2
    alphabet: esm.data.Alphabet
    name: str
    path: Path
    source: Literal["file", "hub cache", "download"]


def hub_checkpoint_path(name: str) -> Path:
    """Where fair-esm (through ``torch.hub``) keeps the weights of model ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pt"


def _foreign_globals(path: Path) -> list[str]:
    """Classes and functions pickled in a zip-format checkpoint that are neither safe for
    torch by default nor allow-listed here; read statically, nothing is executed."""
    allowed = {f"{cls.__module__}.{cls.__qualname__}" for cls in ALLOWED_GLOBALS}
    return [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if g not in allowed]


def _refusal(path: Path, names: list[str]) -> CheckpointError:
    allowed = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in ALLOWED_GLOBALS)
    return CheckpointError(
        f"{path}: refusing to load: it pickles {', '.join(names)}, and an ESM-2 weights file may "
        f"hold only tensors and {allowed} (loading other objects could run arbitrary code)"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an ESM-2 checkpoint with ``torch.load(weights_only=True)``, allow-listing exactly
    :data:`ALLOWED_GLOBALS`, and check fair-esm's layout.

    Returns the dict ``{"model": state_dict, "cfg": {"model": Namespace, ...}, ...}``.

    Raises
    ------
    CheckpointError
        When the file is not a torch checkpoint, pickles any other class, or lacks the
        ESM-2 layout (``model`` tensors and ``cfg["model"]`` with the encoder settings).
    """
    path = Path(path)
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        try:
            foreign = _foreign_globals(path)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({exc})") from None
        if foreign:
            raise _refusal(path, foreign)
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)), warnings.catch_warnings():
            # a non-torch pickle draws a protocol warning before the error we report instead
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # mmap keeps large models from being held twice (file tensors + model parameters)
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        found = re.findall(r"GLOBAL (\S+)", str(exc))
        if found:
            raise _refusal(path, sorted(set(found))) from None
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({_unpickling_reason(exc, path, is_zip)})"
        ) from None
    except Exception as exc:  # the unpickler fails in many ways on arbitrary bytes
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint ({_unpickling_reason(exc, path, is_zip)})"
        ) from None
    _check_layout(path, data)
    return data


def _unpickling_reason(exc: BaseException, path: Path, zipped: bool) -> str:
    """What went wrong, in words. torch's messages carry advice to load with
    ``weights_only=False`` (exactly what must not be done with an unknown file) and arbitrary
    bytes give bare unpickler complaints ('101', 'pop from empty list')."""
    if zipped:
        text = str(exc).strip()
        if "weights_only" in text or "Weights only load failed" in text:
            return "torch cannot read it with weights_only=True"
        return text.splitlines()[0] if text else type(exc).__name__
    with path.open("rb") as fh:
        head = fh.read(2)
    if head == b"PK":  # a zip without its central directory
        return "a damaged or truncated torch.save (zip) file"
    if head[:1] == b"\x80":  # the PROTO opcode that starts pickles of protocol >= 2
        return "a pickle that torch cannot read with weights_only=True, not a torch.save file"
    return "its bytes are not a torch.save file"


def _check_layout(path: Path, data: Any) -> None:
    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: not an ESM-2 checkpoint in fair-esm's format: {reason}")

    if not isinstance(data, Mapping):
        raise bad(f"it holds a {type(data).__name__}, expected a dict with 'model' and 'cfg'")
    missing = [key for key in ("model", "cfg") if key not in data]
    if missing:
        found = ", ".join(repr(k) for k in list(data)[:8]) or "nothing"
        older = " (an ESM-1 or ESM-1b file? only ESM-2 is supported)" if "args" in data else ""
        raise bad(f"no {' and no '.join(repr(k) for k in missing)} entry (it has {found}){older}")
    state = data["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise bad("'model' is not a state dict of tensors")
    cfg = data["cfg"]
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("model"), argparse.Namespace):
        raise bad("cfg['model'] is not an argparse.Namespace (is this an ESM-1 or ESM-1b file?)")
    absent = [f for f in _CFG_FIELDS if not hasattr(cfg["model"], f)]
    if absent:
        raise bad(f"cfg['model'] lacks {', '.join(absent)}")


def build_esm2(name: str, data: dict[str, Any], path: Path) -> tuple[ESM2, esm.data.Alphabet]:
    """Build the model with fair-esm's ``load_model_and_alphabet_core`` (its ESM-2 branch
    strips the ``encoder.sentence_encoder.`` / ``encoder.`` prefixes and checks the keys).

    The model comes back in eval mode; a key or shape mismatch raises
    :class:`CheckpointError` naming ``path``.
    """
    # fair-esm picks its ESM-2 code path by the name's prefix; a local file may be called anything
    core_name = name if name.startswith("esm2") else f"esm2 ({name})"
    try:
        with warnings.catch_warnings():
            # the contact-regression companion is optional for us: we never predict contacts
            warnings.filterwarnings("ignore", message="Regression weights not found")
            model, alphabet = esm.pretrained.load_model_and_alphabet_core(core_name, data, None)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise CheckpointError(f"{path}: fair-esm cannot build an ESM-2 model from it: {detail}") from None
    return model.eval(), alphabet


def _download(name: str, destination: Path) -> str | None:
    """Fetch fair-esm's weights file into ``destination``; a reason on failure."""
    url = MODEL_URL.format(name=name)
    reason = probe(url)
    if reason is not None:
        return f"the download site cannot be reached: {reason}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        # writes to a temporary file beside the destination and renames it when complete
        torch.hub.download_url_to_file(url, str(destination), progress=False)
    except urllib.error.HTTPError as exc:
        return f"downloading {url} failed (HTTP {exc.code} {exc.reason})"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return f"downloading {url} failed ({exc})"
    return None


def load_esm2(name: str, weights: str | Path | None = None, download: bool = True) -> LoadedESM2:
    """Find, read and build an ESM-2 model.

    Parameters
    ----------
    name:
        A hub name from :data:`~protsteps_esm.ESM2_MODELS`; used when ``weights`` is None.
    weights:
        A local checkpoint file; its stored configuration decides the architecture.
    download:
        Whether to fetch missing weights with fair-esm's URL (after a short probe).

    Raises
    ------
    ComponentUnavailableError
        Within seconds when the weights are neither at ``weights``, nor cached, nor
        downloadable; one line naming the model, where it looked and the two ways out.
    CheckpointError
        When a file is found but cannot be used.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ComponentUnavailableError(
                f"ESM-2 weights file {path} {what} (teacher.weights); point it at an ESM-2 "
                "checkpoint (a .pt file), or use --teacher none to train without a teacher"
            )
        data = read_checkpoint(path)
        label = path.name[: -len(".pt")] if path.name.endswith(".pt") else path.name
        model, alphabet = build_esm2(label, data, path)
        return LoadedESM2(model, alphabet, label, path, "file")

    path = hub_checkpoint_path(name)
    source: Literal["hub cache", "download"] = "hub cache"
    if not path.is_file():
        if download:
            reason = _download(name, path)
        else:
            reason = "downloading is off (teacher.download = false)"
        if reason is not None:
            raise ComponentUnavailableError(
                f"ESM-2 model '{name}' is unavailable: no weights in the torch hub cache at {path} "
                f"and {reason}; {_WAYS_OUT}"
            )
        source = "download"
    data = read_checkpoint(path)
    model, alphabet = build_esm2(name, data, path)
    return LoadedESM2(model, alphabet, name, path, source)


def trunk_fingerprint(model: ESM2, num_trunk_layers: int) -> str:
    """SHA-256 over what the frozen trunk's output depends on: the architecture, the token
    embedding and the first ``num_trunk_layers`` transformer layers (names, dtypes, shapes,
    bytes). The trainable tail is left out on purpose, so training it keeps the key stable."""
    header = (
        f"esm2 layers={model.num_layers} dim={model.embed_dim} heads={model.attention_heads} "
        f"token_dropout={bool(model.token_dropout)} trunk={num_trunk_layers}"
    )
    tensors: list[tuple[str, torch.Tensor]] = [("embed_tokens.weight", model.embed_tokens.weight)]
    for i in range(num_trunk_layers):
        tensors += [(f"layers.{i}.{n}", t) for n, t in model.layers[i].state_dict().items()]
    return tensor_fingerprint(header, tensors)
