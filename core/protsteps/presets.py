"""Presets: named run files that plugins ship.

``protsteps pretrain --preset paper`` starts from the run file a plugin registered as
``paper``; a ``--config`` file, the command-line options and ``--set`` then apply on top of
it, in that order (see :func:`protsteps.runconfig.load_run_config`). ``protsteps presets``
lists them.

A plugin adds presets through the hook ``protsteps_register_presets``::

    from importlib.resources import files
    from protsteps import Preset, hookimpl

    @hookimpl
    def protsteps_register_presets():
        return [Preset.from_file("fast", "Small and quick", files(__package__) / "fast.toml")]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import tomllib

from .errors import ConfigError

__all__ = ["Preset", "PresetEntry"]


class _Readable(Protocol):
    def read_text(self, encoding: str = ...) -> str: ...


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a plugin registers: a run file under a name.

    Parameters
    ----------
    name:
        What users write after ``--preset``. Lower case, no spaces.
    description:
        One line for ``protsteps presets``.
    text:
        The run file, as TOML text (the sections of :mod:`protsteps.runconfig`).
    """

    name: str
    description: str
    text: str

    @classmethod
    def from_file(cls, name: str, description: str, path: _Readable) -> Preset:
        """A preset read from a file (a :class:`pathlib.Path` or an
        :func:`importlib.resources.files` resource of the plugin's package)."""
        return cls(name=name, description=description, text=path.read_text(encoding="utf-8"))


@dataclasses.dataclass(frozen=True)
class PresetEntry:
    """A registered preset and the plugin that registered it."""

    preset: Preset
    plugin: str
    version: str

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def description(self) -> str:
        return self.preset.description

    def raw(self) -> dict[str, Any]:
        """The run file's tables; a preset that is not valid TOML is a :class:`ConfigError`
        naming the preset and its plugin."""
        try:
            return tomllib.loads(self.preset.text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"preset '{self.name}' of plugin '{self.plugin}' is not valid TOML: {exc}"
            ) from None
