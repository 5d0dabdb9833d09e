"""Errors a user can act on.

Every error protsteps raises on purpose derives from :class:`ProtstepsError`; the CLI prints
its message as one line (``error: ...``) and exits with the error's :attr:`~ProtstepsError.exit_code`
instead of showing a traceback (``protsteps --debug`` shows it too):

- **2**, a user error: bad input, a bad setting or a bad command line (most errors: the
  message names the file or setting and how to fix it);
- **1**, a failure while running (:class:`RunFailure`): a full disk, a loss that became NaN,
  a run folder held by another process, nothing usable left after every input failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "ProtstepsError",
    "RunFailure",
    "ConfigError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "CompositionError",
    "ComponentUnavailableError",
    "StructureError",
    "build_in_plugin",
]


class ProtstepsError(Exception):
    """Base class of the errors that carry a message meant for the user.

    Raised as such, it is a user error (bad input, setting or usage): exit status 2."""

    #: the CLI's exit status for this error
    exit_code: int = 2


class RunFailure(ProtstepsError):
    """A run failed for a reason other than its input or settings (a full disk, a
    non-finite loss, a run folder in use): exit status 1."""

    exit_code = 1


class ConfigError(ProtstepsError, ValueError):
    """A configuration value, key or section is not valid."""


class UnknownComponentError(ProtstepsError, KeyError):
    """No component of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(RunFailure):
    """Two plugins registered the same name for the same kind (the installation, not the
    command, is at fault)."""


class CompositionError(ProtstepsError):
    """Components that cannot work together (e.g. an encoder needs positions the featurizer
    does not provide)."""


class ComponentUnavailableError(RunFailure):
    """A component cannot be built on this machine (e.g. model weights are missing)."""


class StructureError(ProtstepsError):
    """A structure file cannot be used; the message says which file and why."""


def build_in_plugin(what: str, plugin: str, factory: Callable[..., T], *args: Any) -> T:
    """``factory(*args)``, where a plugin's own exception (anything but a
    :class:`ProtstepsError`) becomes one :class:`CompositionError` line that says whose it is:
    ``{what} of plugin '{plugin}' could not be built: ValueError: ...`` (``what`` names the
    thing, e.g. ``"encoder 'gin'"``). The traceback stays chained for ``--debug``."""
    try:
        return factory(*args)
    except ProtstepsError:
        raise
    except Exception as exc:
        raise CompositionError(
            f"{what} of plugin '{plugin}' could not be built: {type(exc).__name__}: {exc}"
        ) from exc
