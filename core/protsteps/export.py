"""``encoder.pt``: a pretrained encoder, its config, and what it expects as input.

The file is a plain dict (tensors, strings, numbers), loadable with
``torch.load(path, weights_only=True)`` and rebuilt by :func:`load_encoder` through the
registry, without the training stack (schemes, optimisers, tasks)::

    {"format": 1, "protsteps_version": ..., "out_dim": d,
     "encoder": {"name": "gin", "config": {...}},
     "featurizer": {"name": "residue_graph", "config": {...}},
     "teacher": {"name": "esm", "config": {...}} or {"name": "none"},
     "state_dict": {...}}

The encoder was trained on the named featurizer's graphs and (when there was one) on the
named teacher's features: embedding new proteins needs both again, which
:func:`load_pretrained` builds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ._version import __version__
from .components import BuildContext, Encoder, Featurizer, Teacher
from .config import to_dict
from .errors import ProtstepsError
from .files import read_torch_record
from .model import featurizer_context
from .registry import Catalog, default_catalog

__all__ = ["ENCODER_FORMAT", "Pretrained", "encoder_record", "load_encoder", "load_pretrained"]

ENCODER_FORMAT = 1


def _section(choice: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": choice.name}
    if choice.config is not None:
        out["config"] = {k: v for k, v in to_dict(choice.config).items() if v is not None}
    return out


def encoder_record(encoder: Encoder, config: Any, teacher_dim: int | None) -> dict[str, Any]:
    """The contents of ``encoder.pt`` for ``encoder`` trained under the resolved run
    ``config`` on teacher features of width ``teacher_dim`` (``None``: no teacher)."""
    return {
        "format": ENCODER_FORMAT,
        "protsteps_version": __version__,
        "out_dim": int(encoder.out_dim),
        "teacher_dim": teacher_dim,
        "encoder": _section(config.encoder),
        "featurizer": _section(config.featurizer),
        "teacher": _section(config.teacher),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
    }


def _read(path: Path) -> dict[str, Any]:
    record = read_torch_record(path, "encoder file", ENCODER_FORMAT)
    if "state_dict" not in record:
        raise ProtstepsError(f"{path} is not a protsteps encoder file (encoder.pt of a pretrain run)")
    return record


def _resolve(path: Path) -> Path:
    path = Path(path)
    return path / "encoder.pt" if path.is_dir() else path


def _featurizer_context(record: dict[str, Any], catalog: Catalog) -> BuildContext:
    """The context the encoder was built in at pretraining (featurizer name, config, widths
    and irreps of its attributes), so that an encoder sized by them is rebuilt the same."""
    section = record.get("featurizer") or {}
    name = section.get("name")
    if name is None:
        return BuildContext()
    config = catalog.make_config("featurizer", name, section.get("config", {}))
    return featurizer_context(name, catalog.build("featurizer", name, config=config), config)


@dataclasses.dataclass
class Pretrained:
    """A pretrained encoder with the featurizer and teacher it was trained with."""

    encoder: Encoder
    featurizer: Featurizer
    teacher: Teacher | None
    record: dict[str, Any]


def load_encoder(path: Path, catalog: Catalog | None = None) -> tuple[Encoder, dict[str, Any]]:
    """Rebuild the encoder of ``encoder.pt`` (or of a run folder) with its weights; returns
    the encoder and the file's record."""
    catalog = catalog or default_catalog()
    record = _read(_resolve(path))
    section = record["encoder"]
    encoder = catalog.build(
        "encoder",
        section["name"],
        config=catalog.make_config("encoder", section["name"], section.get("config", {})),
        context=dataclasses.replace(
            _featurizer_context(record, catalog), teacher_dim=record.get("teacher_dim")
        ),
    )
    try:
        encoder.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        raise ProtstepsError(f"{path}: the weights do not fit encoder '{section['name']}': {exc}") from None
    return encoder, record


def load_pretrained(path: Path, catalog: Catalog | None = None, *, with_teacher: bool = True) -> Pretrained:
    """The encoder of a run folder (or ``encoder.pt``) with its featurizer and teacher."""
    catalog = catalog or default_catalog()
    record = _read(_resolve(path))
    featurizer_section = record["featurizer"]
    featurizer = catalog.build(
        "featurizer",
        featurizer_section["name"],
        config=catalog.make_config(
            "featurizer", featurizer_section["name"], featurizer_section.get("config", {})
        ),
    )
    teacher = None
    teacher_section = record["teacher"]
    if with_teacher and teacher_section["name"] != "none":
        teacher = catalog.build(
            "teacher",
            teacher_section["name"],
            config=catalog.make_config("teacher", teacher_section["name"], teacher_section.get("config", {})),
        )
    if teacher is not None and teacher.embed_dim != record.get("teacher_dim"):
        raise ProtstepsError(
            f"{path}: teacher '{teacher_section['name']}' gives {teacher.embed_dim}-wide features, "
            f"the encoder was trained on {record.get('teacher_dim')}"
        )
    encoder, record = load_encoder(path, catalog)
    return Pretrained(encoder=encoder, featurizer=featurizer, teacher=teacher, record=record)
