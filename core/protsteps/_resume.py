"""What ``pretrain --resume`` checks before it continues a run: a checkpoint that holds what
a resume needs, a config that is the one the checkpoint was trained with, weights that fit
the model. Each refusal is one line naming the file and the way out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ProtstepsError

__all__ = ["RESUMABLE_TRAIN_KEYS", "check_checkpoint", "config_changes", "refuse_config_changes", "restore"]

#: [train] settings a resumed run may change (through --epochs, --device, --threads or an
#: edit of config.toml): where and how long it runs, never what one step computes
RESUMABLE_TRAIN_KEYS = frozenset(
    {"epochs", "device", "threads", "workers", "callbacks", "log_every", "checkpoint_every"}
)

#: what a checkpoint must hold, with the check of each value
_FIELDS: dict[str, tuple[str, Any]] = {
    "step": ("a step count >= 0", lambda v: _count(v)),
    "epoch": ("an epoch count >= 0", lambda v: _count(v)),
    "skipped_batches": ("a count >= 0", lambda v: _count(v)),
    "best_valid_loss": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "model": ("the model's weights", lambda v: isinstance(v, Mapping)),
    "scheme": ("the scheme's state", lambda v: isinstance(v, Mapping)),
    "config": ("the run's config", lambda v: isinstance(v, Mapping)),
}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def way_out(run_dir: Path) -> str:
    """What to do about a checkpoint that cannot be resumed from."""
    best = run_dir / "checkpoints" / "best.pt"
    fallback = (
        f"continue from the best checkpoint instead (cp {best} {run_dir / 'checkpoints' / 'last.pt'}) or "
        if best.exists()
        else ""
    )
    return f"{fallback}start the run afresh (rm -r {run_dir}, or a new --out)"


def check_checkpoint(record: Mapping[str, Any], path: Path, run_dir: Path) -> None:
    """Refuse a checkpoint that lacks what a resume reads or holds values no run writes (a
    negative step, a step count that is not a number), naming the fields."""
    missing = [key for key in _FIELDS if key not in record]
    if missing:
        raise ProtstepsError(
            f"cannot resume from {path}: it lacks {', '.join(missing)} (a damaged file, or not a "
            f"checkpoint of protsteps pretrain); {way_out(run_dir)}"
        )
    wrong = [
        f"{key} = {_short(record[key])} (expected {what})"
        for key, (what, valid) in _FIELDS.items()
        if not valid(record[key])
    ]
    if wrong:
        raise ProtstepsError(f"cannot resume from {path}: {'; '.join(wrong)}; {way_out(run_dir)}")


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (Mapping, torch.Tensor)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"[encoder] hidden_dim": 16, "[[tasks]] #0 (distance) weight": 1.0, ...}``."""
    flat: dict[str, Any] = {}
    for section, value in config.items():
        if isinstance(value, Mapping):
            for key, item in value.items():
                flat[f"[{section}] {key}"] = item
        elif isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            for index, table in enumerate(value):
                for key, item in table.items():
                    flat[f"[[{section}]] #{index} {key}"] = item
            flat[f"[[{section}]] count"] = len(value)
        else:
            flat[f"[{section}]"] = value
    return flat


def config_changes(trained: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The settings that differ between the config a checkpoint was trained with and the one
    given now (``"[encoder] hidden_dim 16 -> 32"``), leaving out the [train] settings a resume
    may change (:data:`RESUMABLE_TRAIN_KEYS`)."""
    before, after = _flatten(trained), _flatten(now)
    changes = []
    for key in [*before, *(k for k in after if k not in before)]:
        if key.startswith("[train] ") and key.removeprefix("[train] ") in RESUMABLE_TRAIN_KEYS:
            continue
        old, new = before.get(key, "(not set)"), after.get(key, "(not set)")
        if old != new:
            changes.append(f"{key} {_value(old)} -> {_value(new)}")
    return changes


def _value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) and value != "(not set)" else str(value)


def refuse_config_changes(trained: Mapping[str, Any], now: Mapping[str, Any], run_dir: Path) -> None:
    """Refuse to resume with settings other than those the checkpoint was trained with,
    listing what changed (at most five) and how to go on."""
    changes = config_changes(trained, now)
    if not changes:
        return
    listed = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
    raise ProtstepsError(
        f"cannot resume {run_dir}: {run_dir / 'config.toml'} differs from the settings "
        f"checkpoints/last.pt was trained with ({listed}); a resumed run keeps its settings (only "
        f"[train] {', '.join(sorted(RESUMABLE_TRAIN_KEYS))} may change): undo the edit, or start a "
        f"new run with the edited settings: protsteps pretrain --config {run_dir / 'config.toml'} "
        "--out NEW_RUNDIR"
    )


def _state_mismatch(saved: Mapping[str, Any], model: nn.Module) -> list[str]:
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    for key, tensor in expected.items():
        value = saved.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(tensor.shape):
            problems.append(f"{key} has shape {list(value.shape)}, the model {list(tensor.shape)}")
    return problems


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def restore(record: Mapping[str, Any], model: nn.Module, scheme: Any, path: Path, run_dir: Path) -> None:
    """Load the model's weights and the scheme's state (optimisers, schedules) from a checked
    checkpoint; weights that do not fit the model, or a scheme state that cannot be loaded,
    are one line naming the file."""
    problems = _state_mismatch(record["model"], model)
    if problems:
        raise ProtstepsError(
            f"cannot resume from {path}: its weights do not fit the run's model "
            f"({'; '.join(problems[:3])}); a damaged file, or a plugin whose code changed since "
            f"the run started; {way_out(run_dir)}"
        )
    model.load_state_dict(record["model"])
    try:
        scheme.load_state_dict(record["scheme"])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProtstepsError(
            f"cannot resume from {path}: the scheme's state (optimiser, schedule) cannot be "
            f"loaded ({type(exc).__name__}: {first}); {way_out(run_dir)}"
        ) from exc
