"""Building the ``protbert`` teacher from its config, as ``protsteps.build`` and the CLI do."""

from __future__ import annotations

from protsteps import BuildContext
from protsteps.errors import ConfigError
from protsteps.teachers import check_tail_settings, tail_settings

from ._config import ProtBertConfig
from ._loading import load_protbert
from ._teacher import ProtBertTeacher

__all__ = ["build_protbert_teacher"]


def _check(config: ProtBertConfig) -> None:
    """Refuse settings that cannot work before spending time on loading weights (the
    window's upper bound depends on the model and is checked once it is loaded)."""
    if config.window is not None and config.window < 1:
        raise ConfigError(f"[teacher] window: {config.window} must be at least 1 residue")
    if config.stride is not None and config.stride < 1:
        raise ConfigError(f"[teacher] stride: {config.stride} must be at least 1 residue")
    if config.stride is not None and config.window is not None and config.stride > config.window:
        raise ConfigError(f"[teacher] stride: {config.stride} must be in 1..window ({config.window})")
    check_tail_settings(config)


def build_protbert_teacher(config: ProtBertConfig, context: BuildContext) -> ProtBertTeacher:
    """Load the weights (local folder, Hugging Face cache or download) and wrap them.

    Raises :class:`protsteps.errors.ComponentUnavailableError` within seconds when
    transformers is missing or no weights can be had.
    """
    _check(config)
    loaded = load_protbert(config.model, weights=config.weights, download=config.download)
    teacher = ProtBertTeacher(
        loaded.model,
        loaded.vocabulary,
        name=loaded.name,
        weights_path=loaded.path,
        source=loaded.source,
        **tail_settings(config),
    )
    if context.device is not None:
        teacher.to(context.device)
    return teacher
