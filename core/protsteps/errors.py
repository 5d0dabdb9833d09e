"""Errors a user can act on.

Every error protsteps raises on purpose derives from :class:`ProtstepsError`; the CLI prints
its message as one line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

__all__ = [
    "ProtstepsError",
    "ConfigError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "CompositionError",
    "ComponentUnavailableError",
    "StructureError",
]


class ProtstepsError(Exception):
    """Base class of the errors that carry a message meant for the user."""


class ConfigError(ProtstepsError, ValueError):
    """A configuration value, key or section is not valid."""


class UnknownComponentError(ProtstepsError, KeyError):
    """No component of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ProtstepsError):
    """Two plugins registered the same name for the same kind."""


class CompositionError(ProtstepsError):
    """Components that cannot work together (e.g. an encoder needs positions the featurizer
    does not provide)."""


class ComponentUnavailableError(ProtstepsError):
    """A component cannot be built on this machine (e.g. model weights are missing)."""


class StructureError(ProtstepsError):
    """A structure file cannot be used; the message says which file and why."""
