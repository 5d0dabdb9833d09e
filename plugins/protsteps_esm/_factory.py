"""Building the ``esm`` teacher from its config, as ``protsteps.build`` and the CLI do."""

from __future__ import annotations

from protsteps import BuildContext
from protsteps.errors import ConfigError
from protsteps.teachers import check_tail_settings, tail_settings

from ._config import MAX_WINDOW, ESMConfig
from ._loading import load_esm2
from ._teacher import ESMTeacher

__all__ = ["build_esm_teacher"]


def _check(config: ESMConfig) -> None:
    """Refuse settings that cannot work before spending time on loading weights."""
    if not 1 <= config.window <= MAX_WINDOW:
        raise ConfigError(f"[teacher] window: {config.window} must be in 1..{MAX_WINDOW} residues")
    if not 1 <= config.stride <= config.window:
        raise ConfigError(f"[teacher] stride: {config.stride} must be in 1..window ({config.window})")
    check_tail_settings(config)


def build_esm_teacher(config: ESMConfig, context: BuildContext) -> ESMTeacher:
    """Load the weights (local file, torch hub cache or download) and wrap them.

    Raises :class:`protsteps.errors.ComponentUnavailableError` within seconds when no
    weights can be had, which is what teacher ``auto`` relies on to fall back to no teacher.
    """
    _check(config)
    loaded = load_esm2(config.model, weights=config.weights, download=config.download)
    teacher = ESMTeacher(
        loaded.model,
        loaded.alphabet,
        name=loaded.name,
        weights_path=loaded.path,
        source=loaded.source,
        **tail_settings(config),
    )
    if context.device is not None:
        teacher.to(context.device)
    return teacher
