"""The ``protsteps`` command line (Typer; output through rich).

Each command lives in its own module and adds itself to :data:`app`. Errors that protsteps
raises on purpose (:class:`~protsteps.errors.ProtstepsError`, which includes a plugin's own
exception raised while building its component) are printed as one line and exit with status
1; ``protsteps --debug COMMAND`` prints the traceback first, down to the plugin's original
exception. Typer's usage errors exit with status 2. Under ``torchrun`` every process meets
the same error, so only rank 0 prints it; the others exit with the same status quietly.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from rich.markup import escape

from ..errors import ProtstepsError
from . import _embed, _featurize, _finetune, _plugins, _presets, _pretrain  # noqa: F401  (register the commands)
from ._app import app, err_console, options

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    options.debug = False
    try:
        app(args=list(argv) if argv is not None else None, prog_name="protsteps")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except ProtstepsError as exc:
        if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 says it once
            return 1
        if options.debug:
            sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            sys.stderr.flush()
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
