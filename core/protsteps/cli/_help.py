"""Help screens that say what an option does when it is not given, without type tags on flags.

Most options of ``pretrain`` and ``finetune`` default to "not given" (``None``), so that a run
file, a preset or a run folder can decide; Typer then shows no default at all. :class:`Group`
(the root command's class) adds each such option's effective default to its help text, read
from the same config dataclasses the run uses (``(default: 10)``), and drops the ``<bool>``
tag of flags (``--quiet``, ``--help``) and the ``list[...]`` of repeatable options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer.core

__all__ = ["Group", "tidy"]

#: what an empty cache folder setting means (protsteps.featurize.default_cache_dir)
_CACHE = "$XDG_CACHE_HOME/protsteps/graphs, else ~/.cache/protsteps/graphs"


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_plain(v) for v in value)
    return str(value)


def _pretrain_defaults() -> dict[str, str]:
    from ..config import to_dict
    from ..runconfig import DataConfig, TrainConfig, default_raw

    train = {k: _plain(v) for k, v in to_dict(TrainConfig()).items()}
    raw = default_raw()
    names: tuple[str, ...] = ("epochs", "batch_size", "max_residues", "seed", "device", "threads")
    defaults: dict[str, str] = {k: train[k] for k in names if k in train}
    defaults.update({kind: raw[kind]["name"] for kind in ("featurizer", "encoder", "teacher", "scheme")})
    defaults["task"] = ", ".join(t["name"] for t in raw["tasks"])
    defaults["cache_dir"] = to_dict(DataConfig())["cache_dir"] or _CACHE
    return defaults


def _finetune_defaults() -> dict[str, str]:
    from ..config import to_dict
    from ..downstream import FinetuneConfig

    config = {k: _plain(v) for k, v in to_dict(FinetuneConfig()).items()}
    defaults = {k: v for k, v in config.items() if v != ""}
    defaults.update(
        split=config["split_fractions"],
        split_seed="--seed",
        encoder_lr="--lr",
        cache_dir=_CACHE,
        label_column="label",
        teacher="auto",
    )
    return defaults


def _cache_default() -> dict[str, str]:
    return {"cache_dir": _CACHE}


#: the effective default of options whose declared default is None, per command
_DEFAULTS: dict[str, Callable[[], dict[str, str]]] = {
    "pretrain": _pretrain_defaults,
    "finetune": _finetune_defaults,
    "featurize": _cache_default,
    "embed": _cache_default,
    "info": _cache_default,
    "migrate": _cache_default,
}


def _untagged(option: Any) -> None:
    if getattr(option, "is_flag", False) and option.metavar is None:
        option.metavar = ""


#: ``True`` while :func:`protsteps.cli.main` runs: a command's defaults are then written into
#: its help when the help is shown, not when the command line is built, because they come
#: from config classes whose modules may import torch (the CLI starts without it)
defer_defaults = False


def tidy(command: Any, name: str) -> None:
    """Defaults into the help of ``command``'s not-given options; no type tag on flags
    (``--help`` included); repeatable options tagged with their element type."""
    for param in command.params:
        if not isinstance(param, typer.core.TyperOption):
            continue
        _untagged(param)
        if getattr(param, "multiple", False) and param.metavar is None:
            try:
                tag = param.display_type(None)  # type: ignore[arg-type]
            except Exception:  # a type Typer cannot describe without a context: leave it
                tag = ""
            if tag.startswith("<list[") and tag.endswith("]>"):
                param.metavar = f"<{tag[6:-2]}>"
    if name in _DEFAULTS:
        if defer_defaults:
            _defaults_when_shown(command, name)
        else:
            _fill_defaults(command, name)
    _untagged_help(command)
    for sub_name, sub in getattr(command, "commands", {}).items():
        tidy(sub, sub_name)


def _fill_defaults(command: Any, name: str) -> None:
    defaults = _DEFAULTS[name]()
    for param in command.params:
        if not isinstance(param, typer.core.TyperOption):
            continue
        value = defaults.get(param.name or "")
        text = param.help or ""
        if param.default is None and value and "default" not in text.lower():
            param.help = f"{text.rstrip()} (default: {value})" if text else f"(default: {value})"


def _defaults_when_shown(command: Any, name: str) -> None:
    original = command.format_help
    filled = False

    def format_help(ctx: Any, formatter: Any) -> Any:
        nonlocal filled
        if not filled:
            filled = True
            _fill_defaults(command, name)
        return original(ctx, formatter)

    command.format_help = format_help


class Group(typer.core.TyperGroup):
    """The root command: its commands' help screens tidied (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy(self, "")


def _untagged_help(command: Any) -> None:
    original = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            _untagged(option)
        return option

    command.get_help_option = get_help_option
