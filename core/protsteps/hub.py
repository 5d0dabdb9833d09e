"""Exported models: a pretrained encoder as a folder that can be shared, in the layout of the
Hugging Face Hub.

``protsteps export RUN DIR`` (:func:`export_model`) splits a run's ``encoder.pt`` (see
:mod:`protsteps.export`) into::

    DIR/
      model.safetensors   the tensors: the encoder's state_dict under "encoder.", the
                          teacher's trained state (when encoder.pt holds one) under "teacher."
      config.json         everything else (below)
      README.md           a model card: data, steps, metrics, how to load

``config.json`` holds the folder's format (``protsteps_format``), the protsteps version that
wrote it and the one the encoder was trained with, the embedding width, the featurizer,
encoder and teacher (name, config, the plugin that registers each), the teacher's
fingerprint, each plugin's distribution and version, the name, dtype and shape of every
tensor and the SHA-256 of ``model.safetensors``, and (from the run folder, for people) the
pretext tasks, scheme, steps and losses of the pretraining.

:func:`from_pretrained` (and ``--from DIR`` of ``finetune`` and ``embed``, through
:func:`protsteps.export.load_pretrained`) reads it back into the same record as
``encoder.pt``, then builds the components the same way. Nothing in the folder is unpickled:
``config.json`` is JSON and ``model.safetensors`` a header of JSON and raw tensor bytes. The
folder is refused, in one line naming it, when its tensors are not the ones ``config.json``
lists (missing and unexpected names given), when ``model.safetensors`` is not the file
``config.json`` was written with (its SHA-256), when a setting fails its component's
validation, and when a component's plugin is not installed (its distribution named). Weights
that do not fit the encoder its settings build are refused naming the tensors.

Pretraining checkpoints (``checkpoints/*.pt``) are not exported: a run resumes from its run
folder, an export only embeds and fine-tunes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import tomllib
from safetensors import SafetensorError
from torch import Tensor

from ._version import __version__
from .config import fields_of
from .errors import ConfigError, ProtstepsError
from .export import ENCODER_FORMAT, Pretrained, is_location, load_encoder, load_pretrained
from .files import atomic_write_bytes, atomic_write_text, read_torch_record
from .registry import Catalog, default_catalog

__all__ = [
    "CARD_FILE",
    "CONFIG_FILE",
    "ENCODER_PREFIX",
    "EXPORT_FORMAT",
    "TEACHER_PREFIX",
    "WEIGHTS_FILE",
    "Export",
    "export_model",
    "from_pretrained",
    "is_export",
    "read_export",
]

#: the layout of an exported folder (``protsteps_format`` in config.json)
EXPORT_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
#: the prefixes of the tensor names in model.safetensors
ENCODER_PREFIX = "encoder."
TEACHER_PREFIX = "teacher."
#: the component sections of config.json, as in encoder.pt
_SECTIONS = ("featurizer", "encoder", "teacher")
#: how many names an error lists before "and N more"
_LISTED = 6


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder to read as an export: it holds ``config.json`` or
    ``model.safetensors`` and no ``encoder.pt`` (a run folder has ``encoder.pt`` and
    ``config.toml``)."""
    path = Path(path)
    return (
        path.is_dir()
        and ((path / CONFIG_FILE).exists() or (path / WEIGHTS_FILE).exists())
        and not (path / "encoder.pt").exists()
    )


# ---------------------------------------------------------------------------------- reading


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProtstepsError(
            f"{folder}: {CONFIG_FILE} is missing, so this is not a protsteps export "
            "(`protsteps export RUN DIR` writes one)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtstepsError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtstepsError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "export the model again from its run"
        ) from None
    if not isinstance(config, dict) or "protsteps_format" not in config:
        raise ProtstepsError(f"{path} is not the config.json of a protsteps export (no protsteps_format)")
    if config["protsteps_format"] != EXPORT_FORMAT:
        raise ProtstepsError(
            f"{path}: protsteps_format {config['protsteps_format']!r} is not one this protsteps "
            f"{__version__} reads ({EXPORT_FORMAT}); load it with the protsteps that wrote it "
            f"({config.get('protsteps_version', 'unknown')})"
        )
    return config


def _section_of(config: Mapping[str, Any], kind: str, path: Path) -> dict[str, Any]:
    section = config.get(kind)
    if not isinstance(section, dict) or not isinstance(section.get("name"), str) or not section["name"]:
        raise ProtstepsError(f"{path}: {kind}.name is missing or not a string; export the model again")
    settings = section.get("config", {})
    if not isinstance(settings, dict):
        raise ProtstepsError(f"{path}: {kind}.config is not a table of settings")
    return section


def _width(config: Mapping[str, Any], key: str, path: Path, *, optional: bool = False) -> int | None:
    value = config.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProtstepsError(f"{path}: {key} must be a positive whole number, not {value!r}")
    return value


def _check_installed(
    config: Mapping[str, Any], kind: str, section: Mapping[str, Any], catalog: Catalog, folder: Path
) -> None:
    """A component whose plugin is not installed: one line naming the plugin and the
    distribution (and version) config.json records for it."""
    name = section["name"]
    if name in catalog.registry(kind) or name in catalog.registry(kind).conflicts:
        return
    plugin = section.get("plugin")
    failed = [f for f in catalog.failures if f.plugin == plugin]
    if failed:
        raise ProtstepsError(f"{folder}: {kind} '{name}' cannot be built here: {failed[0]}")
    package = (config.get("plugins") or {}).get(plugin) if isinstance(plugin, str) else None
    distribution = package.get("distribution") if isinstance(package, dict) else None
    version = package.get("version") if isinstance(package, dict) else None
    if distribution:
        pinned = f"{distribution}=={version}" if version else distribution
        source = f"plugin '{plugin}' of package {distribution} {version or ''}".rstrip()
        way_out = f"install it (pip install '{pinned}') and load again"
    elif plugin:
        source, way_out = f"plugin '{plugin}'", "install the package that provides it and load again"
    else:
        source, way_out = "a plugin config.json does not name", "install the plugin that provides it"
    raise ProtstepsError(
        f"{folder}: {kind} '{name}' is not installed here (it comes from {source}); {way_out} "
        "(protsteps plugins lists what is installed)"
    )


def _check_settings(kind: str, section: Mapping[str, Any], catalog: Catalog, folder: Path) -> None:
    """Every setting (but locations, which the loader decides) valid for its component."""
    entry = catalog.get(kind, section["name"])
    locations = {f.name for f in fields_of(entry.config) if is_location(f.name, f.type)}
    settings = {
        key: value
        for key, value in (section.get("config") or {}).items()
        if key not in locations and not is_location(key, "")
    }
    try:
        catalog.make_config(kind, section["name"], settings)
    except ConfigError as exc:
        raise ConfigError(f"{folder / CONFIG_FILE}: {exc}") from None


def _read_weights(folder: Path, config: Mapping[str, Any]) -> dict[str, Tensor]:
    """The tensors of model.safetensors, read once: their names checked against config.json's
    list, the file's bytes against its SHA-256."""
    path = folder / WEIGHTS_FILE
    weights = config.get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("tensors"), dict):
        raise ProtstepsError(f"{folder / CONFIG_FILE}: weights.tensors is missing; export the model again")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProtstepsError(
            f"{folder}: {WEIGHTS_FILE} is missing; put it back or export the model again"
        ) from None
    except OSError as exc:
        raise ProtstepsError(f"{path} cannot be read ({exc.strerror or exc})") from None
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ProtstepsError(
            f"{path} is not a readable safetensors file ({exc}); export the model again"
        ) from None
    listed = set(weights["tensors"])
    missing, unexpected = sorted(listed - set(tensors)), sorted(set(tensors) - listed)
    if missing or unexpected:
        parts = [
            f"missing {_listing(missing)}" if missing else "",
            f"unexpected {_listing(unexpected)}" if unexpected else "",
        ]
        raise ProtstepsError(
            f"{folder}: {WEIGHTS_FILE} does not hold the tensors {CONFIG_FILE} lists ("
            + "; ".join(p for p in parts if p)
            + "); put the original file back or export the model again"
        )
    if hashlib.sha256(data).hexdigest() != weights.get("sha256"):
        raise ProtstepsError(
            f"{folder}: {WEIGHTS_FILE} is not the file {CONFIG_FILE} was written with (its SHA-256 "
            "differs: changed, or swapped for another model's); put the original file back or "
            "export the model again"
        )
    return tensors


def _split(
    tensors: Mapping[str, Tensor], has_teacher: bool, folder: Path
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    encoder = {k[len(ENCODER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)}
    teacher = {k[len(TEACHER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TEACHER_PREFIX)}
    stray = [k for k in tensors if not k.startswith((ENCODER_PREFIX, TEACHER_PREFIX))]
    if teacher and not has_teacher:
        stray += [TEACHER_PREFIX + k for k in teacher]
    if stray:
        raise ProtstepsError(
            f"{folder}: {WEIGHTS_FILE} holds tensors that are neither the encoder's ('{ENCODER_PREFIX}...') "
            f"nor its teacher's ('{TEACHER_PREFIX}...'): unexpected {_listing(stray)}"
        )
    return encoder, teacher


def read_export(
    folder: str | os.PathLike[str], catalog: Catalog | None = None, *, need_teacher: bool = True
) -> dict[str, Any]:
    """The ``encoder.pt`` record (see :mod:`protsteps.export`) of the exported ``folder``,
    read from ``config.json`` and ``model.safetensors`` without unpickling anything.

    Checked here, each refusal one :class:`~protsteps.errors.ProtstepsError` line naming the
    folder: the format, the sections, that the featurizer, encoder and (``need_teacher``)
    teacher are installed, that their settings are valid, that the tensors are the ones
    config.json lists and the file the one it was written with."""
    folder = Path(folder)
    catalog = catalog or default_catalog()
    config = _read_config(folder)
    where = folder / CONFIG_FILE
    sections = {kind: _section_of(config, kind, where) for kind in _SECTIONS}
    has_teacher = sections["teacher"]["name"] != "none"
    for kind in _SECTIONS:
        if kind == "teacher" and (not has_teacher or not need_teacher):
            continue
        _check_installed(config, kind, sections[kind], catalog, folder)
        _check_settings(kind, sections[kind], catalog, folder)
    tensors = _read_weights(folder, config)
    encoder_state, teacher_state = _split(tensors, has_teacher, folder)
    record: dict[str, Any] = {
        "format": ENCODER_FORMAT,
        "protsteps_version": str(config.get("trained_with") or config.get("protsteps_version") or ""),
        "out_dim": _width(config, "out_dim", where),
        "teacher_dim": _width(config, "teacher_dim", where, optional=not has_teacher),
        **{
            kind: {"name": s["name"], **({"config": dict(s["config"])} if "config" in s else {})}
            for kind, s in sections.items()
        },
        "state_dict": encoder_state,
    }
    fingerprint = sections["teacher"].get("fingerprint")
    if has_teacher and fingerprint is not None:
        if not isinstance(fingerprint, str):
            raise ProtstepsError(f"{where}: teacher.fingerprint is not a string")
        record["teacher_fingerprint"] = fingerprint
    if teacher_state:
        record["teacher_state"] = teacher_state
    return record


def from_pretrained(
    path: str | os.PathLike[str],
    catalog: Catalog | None = None,
    *,
    with_teacher: bool = True,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Pretrained:
    """The encoder of an exported folder (or of a run folder or ``encoder.pt``) with its
    featurizer and teacher, in eval mode; see :func:`protsteps.export.load_pretrained` for
    ``with_teacher`` and ``settings``.

    >>> model = protsteps.from_pretrained("gin-masif")                  # doctest: +SKIP
    >>> batch = protsteps.collate(protsteps.featurize("1abc.pdb"))     # doctest: +SKIP
    >>> model.encoder(batch).graph.shape                               # doctest: +SKIP
    torch.Size([1, 128])
    """
    pretrained = load_pretrained(Path(path), catalog, with_teacher=with_teacher, settings=settings)
    pretrained.encoder.eval()
    if pretrained.teacher is not None:
        pretrained.teacher.eval()
    return pretrained


# ---------------------------------------------------------------------------------- writing


@dataclasses.dataclass
class Export:
    """What :func:`export_model` wrote."""

    folder: Path
    tensors: int
    parameters: int
    weights_bytes: int
    #: what the model card could not say (a run file that was missing or unreadable)
    notes: list[str] = dataclasses.field(default_factory=list)


def _source(run: Path) -> Path:
    if run.is_dir():
        path = run / "encoder.pt"
        if not path.is_file():
            raise ProtstepsError(
                f"{run} holds no encoder.pt: give a pretrain run folder (it writes encoder.pt when it "
                "ends) or an encoder.pt file"
            )
        return path
    if not run.exists():
        raise ProtstepsError(f"{run} does not exist: give a pretrain run folder or an encoder.pt file")
    return run


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ProtstepsError(f"{out} is a file; give a folder for the export")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise ProtstepsError(
            f"{out} is not empty; give a new or empty folder, or --force to replace an earlier export there"
        )
    try:
        earlier = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict) or "protsteps_format" not in earlier:
        raise ProtstepsError(
            f"{out} holds files that are not a protsteps export; --force replaces only an earlier "
            "export: give another folder"
        )


def _plugins(record: Mapping[str, Any], catalog: Catalog) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """kind -> plugin name of the record's components, and plugin -> its distribution and
    version (``None`` for a plugin not loaded from a package)."""
    packages: dict[str, tuple[str, str]] = {}
    manager = catalog.plugin_manager
    for plugin, dist in manager.list_plugin_distinfo():
        name = manager.get_name(plugin)
        if name is not None:
            packages[name] = (dist.project_name, dist.version)
    owners: dict[str, str] = {}
    found: dict[str, dict[str, Any]] = {}
    for kind in _SECTIONS:
        name = record[kind]["name"]
        if kind == "teacher" and name == "none":
            continue
        try:
            entry = catalog.get(kind, name)
        except ProtstepsError as exc:
            raise ProtstepsError(f"cannot export: {exc}; install the plugin the run used") from None
        owners[kind] = entry.plugin
        distribution, version = packages.get(entry.plugin, (None, entry.version or None))
        found[entry.plugin] = {"distribution": distribution, "version": version}
    return owners, found


def _storable(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors, each with its own storage (safetensors refuses tensors that
    share memory, as tied weights do; loading ties them again through the module)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        shared = storage.data_ptr() in seen or storage.nbytes() != tensor.nbytes
        if storage.nbytes():
            seen.add(storage.data_ptr())
        out[name] = tensor.clone() if shared else tensor
    return out


def _tensors_of(record: Mapping[str, Any], source: Path) -> dict[str, Tensor]:
    tensors = {ENCODER_PREFIX + k: v for k, v in record["state_dict"].items()}
    tensors.update({TEACHER_PREFIX + k: v for k, v in (record.get("teacher_state") or {}).items()})
    odd = sorted(k for k, v in tensors.items() if not isinstance(v, Tensor))
    if odd:
        raise ProtstepsError(
            f"{source}: {_listing(odd)} are not tensors; this is not an encoder file protsteps wrote"
        )
    return _storable(tensors)


def _config_json(
    record: Mapping[str, Any],
    tensors: Mapping[str, Tensor],
    digest: str,
    catalog: Catalog,
    pretraining: Mapping[str, Any] | None,
) -> dict[str, Any]:
    owners, plugins = _plugins(record, catalog)
    sections: dict[str, Any] = {}
    for kind in _SECTIONS:
        section = dict(record[kind])
        if kind in owners:
            section["plugin"] = owners[kind]
        sections[kind] = section
    if record.get("teacher_fingerprint") is not None:
        sections["teacher"]["fingerprint"] = record["teacher_fingerprint"]
    return {
        "library_name": "protsteps",
        "protsteps_format": EXPORT_FORMAT,
        "protsteps_version": __version__,
        "trained_with": record.get("protsteps_version"),
        "out_dim": record["out_dim"],
        "teacher_dim": record.get("teacher_dim"),
        **sections,
        "plugins": plugins,
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": digest,
            "tensors": {
                name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
                for name, t in tensors.items()
            },
        },
        **({"pretraining": dict(pretraining)} if pretraining else {}),
    }


def _install(built: Path, out: Path) -> None:
    """Put the finished folder ``built`` at ``out``: one rename onto a new or empty folder;
    an earlier export (``--force``) is moved aside first and removed after, and put back
    when the new one cannot take its place (``out`` never ends without an export that was
    there)."""
    if out.is_dir() and any(out.iterdir()):
        aside = out.parent / f".{out.name}.{secrets.token_hex(6)}.old"
        os.rename(out, aside)
        try:
            os.rename(built, out)
        except BaseException as exc:
            try:
                os.rename(aside, out)
            except OSError as again:
                raise ProtstepsError(
                    f"{out}: the new export could not be put in place ({exc}), nor the earlier one put "
                    f"back ({again.strerror or again}); the earlier export is at {aside}"
                ) from exc
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    os.rename(built, out)


def export_model(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    catalog: Catalog | None = None,
) -> Export:
    """Write the encoder of ``run`` (a pretrain run folder or an ``encoder.pt``) as an
    exported folder ``out`` (see the module docstring).

    The folder is built beside ``out`` and renamed into place once it loads back, so ``out``
    never holds half an export. A non-empty ``out`` is refused unless ``force`` and it holds
    an earlier export (which is replaced)."""
    run, out = Path(run), Path(out)
    catalog = catalog or default_catalog()
    source = _source(run)
    record = read_torch_record(source, "encoder file", ENCODER_FORMAT)
    if "state_dict" not in record:
        raise ProtstepsError(f"{source} is not a protsteps encoder file (encoder.pt of a pretrain run)")
    _check_destination(out, force)
    tensors = _tensors_of(record, source)
    # one metadata entry: safetensors writes several in no fixed order, and the same model
    # should give the same bytes (and SHA-256) at every export
    weights = safetensors.torch.save(tensors, metadata={"format": "pt"})
    run_folder = source.parent if (source.parent / "config.toml").is_file() else None
    summary, notes = _pretraining(run_folder)
    config = _config_json(record, tensors, hashlib.sha256(weights).hexdigest(), catalog, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    built = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    built.mkdir()
    try:
        atomic_write_bytes(built / WEIGHTS_FILE, weights)
        atomic_write_text(built / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        atomic_write_text(built / CARD_FILE, model_card(config, out.name))
        load_encoder(built, catalog)  # what was written loads back (every tensor fits)
        _install(built, out)
    finally:
        if built.exists():
            shutil.rmtree(built, ignore_errors=True)
    return Export(
        folder=out,
        tensors=len(tensors),
        parameters=sum(t.numel() for t in tensors.values()),
        weights_bytes=len(weights),
        notes=notes,
    )


# ------------------------------------------------------------------------ the model card


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line a kill cut short
        if isinstance(record, dict):
            records.append(record)
    return records


def _pretraining(run: Path | None) -> tuple[dict[str, Any], list[str]]:
    """What the run folder says about the pretraining (for config.json and the card), and
    a note per run file that was missing or unreadable."""
    if run is None:
        return {}, ["the encoder file is not in a run folder: the model card has no training details"]
    notes: list[str] = []
    summary: dict[str, Any] = {}
    try:
        config = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{run / 'config.toml'} not read ({exc})")
        config = {}
    tasks = config.get("tasks")
    summary["tasks"] = [t for t in tasks if isinstance(t, dict)] if isinstance(tasks, list) else []
    if isinstance(config.get("scheme"), dict):
        summary["scheme"] = config["scheme"]
    train = config.get("train")
    train = train if isinstance(train, dict) else {}
    summary["train"] = {
        k: train[k] for k in ("epochs", "batch_size", "max_residues", "lr", "seed") if k in train
    }
    data = config.get("data")
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if isinstance(inputs, list):
        summary["inputs"] = [Path(str(p)).name for p in inputs]
    try:
        metrics = _read_json_lines(run / "metrics.jsonl")
    except OSError as exc:
        notes.append(f"{run / 'metrics.jsonl'} not read ({exc.strerror or exc})")
        metrics = []
    steps = [m["step"] for m in metrics if isinstance(m.get("step"), int)]
    if steps:
        summary["steps"] = max(steps)
        summary["epochs_run"] = 1 + max(
            (m["epoch"] for m in metrics if isinstance(m.get("epoch"), int)), default=0
        )
    valid = [
        m["loss"] for m in metrics if m.get("split") == "valid" and isinstance(m.get("loss"), (int, float))
    ]
    if valid:
        summary["best_valid_loss"] = min(valid)
    train_losses = [
        m["loss"] for m in metrics if m.get("split") == "train" and isinstance(m.get("loss"), (int, float))
    ]
    if train_losses:
        summary["last_train_loss"] = train_losses[-1]
    try:
        report = json.loads((run / "featurize-report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = None
    if isinstance(report, dict) and isinstance(report.get("ok"), list):
        ok = [c for c in report["ok"] if isinstance(c, dict)]
        summary["chains"] = len(ok)
        summary["residues"] = sum(int(c.get("residues", 0) or 0) for c in ok)
        summary["failed"] = len(report.get("failed") or [])
    return summary, notes


def _settings_text(section: Mapping[str, Any]) -> str:
    settings = section.get("config") or {}
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) or "defaults"


def _component_row(kind: str, config: Mapping[str, Any]) -> str:
    section = config[kind]
    if section["name"] == "none":
        return f"| {kind} | none | |"
    plugin = section.get("plugin")
    package = (config.get("plugins") or {}).get(plugin) or {}
    origin = f"plugin `{plugin}`" if plugin else ""
    if package.get("distribution"):
        origin += f" (package `{package['distribution']}` {package.get('version') or ''})".replace(" )", ")")
    return f"| {kind} | `{section['name']}` {origin} | {_settings_text(section)} |"


def _pretraining_lines(summary: Mapping[str, Any]) -> list[str]:
    if not summary:
        return ["Not recorded: the model was exported from an `encoder.pt` outside its run folder.", ""]
    lines = []
    inputs = summary.get("inputs") or []
    if inputs:
        shown = ", ".join(f"`{name}`" for name in inputs[:5]) + (
            f" and {len(inputs) - 5} more" if len(inputs) > 5 else ""
        )
        lines.append(f"- **Data**: {len(inputs)} input{'s' if len(inputs) != 1 else ''} ({shown})")
    if "chains" in summary:
        lines.append(
            f"- **Chains**: {summary['chains']} featurized ({summary['residues']} residues), "
            f"{summary['failed']} input{'s' if summary['failed'] != 1 else ''} failed"
        )
    tasks = summary.get("tasks") or []
    if tasks:
        described = ", ".join(f"`{t.get('name')}` (weight {t.get('weight', 1.0)})" for t in tasks)
        scheme = (summary.get("scheme") or {}).get("name")
        lines.append(f"- **Pretext tasks**: {described}" + (f"; scheme `{scheme}`" if scheme else ""))
    train = summary.get("train") or {}
    if "steps" in summary:
        planned = f" of {train['epochs']} planned" if "epochs" in train else ""
        lines.append(
            f"- **Steps**: {summary['steps']} ({summary.get('epochs_run', '?')} epoch(s){planned}); "
            + ", ".join(f"{k} {v}" for k, v in train.items() if k != "epochs")
        )
    if "best_valid_loss" in summary:
        lines.append(f"- **Best validation loss**: {summary['best_valid_loss']:.4f}")
    if "last_train_loss" in summary:
        lines.append(f"- **Last training loss**: {summary['last_train_loss']:.4f}")
    return [*lines, ""]


def model_card(config: Mapping[str, Any], name: str) -> str:
    """The README.md of an export whose config.json is ``config``, placed in a folder called
    ``name``: front matter for the Hub, the components, the pretraining, how to load."""
    encoder, teacher = config["encoder"]["name"], config["teacher"]["name"]
    weights = config["weights"]
    parameters = sum(_numel(t["shape"]) for t in weights["tensors"].values())
    fingerprint = config["teacher"].get("fingerprint")
    teacher_line = (
        "none: the encoder reads the structure alone"
        if teacher == "none"
        else f"`{teacher}`, rebuilt from its settings"
        + (
            ", its trained state in `model.safetensors`"
            if any(k.startswith(TEACHER_PREFIX) for k in weights["tensors"])
            else ""
        )
        + (f"; fingerprint `{fingerprint[:16]}…` checked on load" if fingerprint else "")
    )
    lines = [
        "---",
        "library_name: protsteps",
        "tags:",
        "- protein",
        "- protein-structure",
        "- self-supervised-learning",
        "- protsteps",
        "---",
        "",
        f"# {name}: a `{encoder}` protein structure encoder",
        "",
        f"Pretrained with protsteps {config.get('trained_with') or ''} (STEPS: structure-aware "
        "self-supervised learning on residue graphs) and exported with protsteps "
        f"{config['protsteps_version']}. It embeds protein chains, per residue and per protein, "
        f"as {config['out_dim']}-wide vectors.",
        "",
        "## Model",
        "",
        "| component | what | settings |",
        "| --- | --- | --- |",
        _component_row("featurizer", config),
        _component_row("encoder", config),
        _component_row("teacher", config),
        "",
        f"- **Teacher**: {teacher_line}",
        f"- **Embedding width**: {config['out_dim']}",
        f"- **Weights**: `{WEIGHTS_FILE}`, {len(weights['tensors'])} tensors, {parameters:,} values, "
        f"SHA-256 `{weights['sha256']}`",
        "",
        "## Pretraining",
        "",
        *_pretraining_lines(config.get("pretraining") or {}),
        "## How to load",
        "",
        "Install protsteps (and the plugins named above), then in Python:",
        "",
        "```python",
        "import protsteps",
        "import torch",
        "",
        f'model = protsteps.from_pretrained("{name}")  # encoder, featurizer, teacher (eval mode)',
        'featurizer = model.record["featurizer"]',
        'graphs = protsteps.featurize("protein.pdb", featurizer["name"], **featurizer.get("config", {}))',
        "batch = protsteps.collate(graphs)",
        "with torch.no_grad():",
        "    features = model.teacher(batch.sequences) if model.teacher is not None else None",
        "    output = model.encoder(batch, features)",
        f"print(output.graph.shape)  # [chains, {config['out_dim']}]: one embedding per chain",
        "```",
        "",
        "or from the command line:",
        "",
        "```bash",
        f"protsteps embed structures/ --from {name} --out embeddings.npz",
        f"protsteps finetune labels.tsv --from {name} --out finetuned  # a head trained on your labels",
        "```",
        "",
        "## Files",
        "",
        f"- `{WEIGHTS_FILE}`: the encoder's tensors (`{ENCODER_PREFIX}*`)"
        + (f" and the teacher's trained state (`{TEACHER_PREFIX}*`)" if teacher != "none" else ""),
        f"- `{CONFIG_FILE}`: components, settings, plugins, versions, tensor list and the weights' SHA-256",
        f"- `{CARD_FILE}`: this card",
        "",
        "protsteps reads these files without unpickling anything, and refuses a folder whose weights "
        "are not the ones `config.json` lists.",
        "",
    ]
    return "\n".join(lines)


def _numel(shape: Sequence[int]) -> int:
    total = 1
    for size in shape:
        total *= int(size)
    return total
