"""The ``protsteps`` command line (Typer; output through rich).

Each command lives in its own module and adds itself to :data:`app`. Errors that protsteps
raises on purpose (:class:`~protsteps.errors.ProtstepsError`, which includes a plugin's own
exception raised while building its component) are printed as one line, ``error: ...``, and
exit with the error's status: 2 for a user error (bad input, setting or command line, like
Typer's own usage errors), 1 for a failure while running
(:class:`~protsteps.errors.RunFailure`). The operating system's refusals are answered the
same way: an ``OSError`` that names a file (a full disk, a read-only folder, a path that is
a file) is one line naming the file with a way out, as is running out of memory.
``protsteps --debug COMMAND`` prints the traceback first, down to the plugin's original
exception. Under ``torchrun`` every process meets the same error, so only rank 0 prints it;
the others exit with the same status quietly.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence

from rich.markup import escape

from ..errors import ProtstepsError, RunFailure
from . import _cache, _embed, _export, _featurize, _finetune, _help, _plugins, _presets, _pretrain  # noqa: F401  (register the commands)
from ._app import app, err_console, options

__all__ = ["app", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    options.debug = False
    _help.defer_defaults = True  # torch only when a help screen shows the defaults it decides
    try:
        app(args=list(argv) if argv is not None else None, prog_name="protsteps")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except ProtstepsError as exc:
        return _report(exc, exc)
    except OSError as exc:
        return _report(exc, os_error(exc))
    except MemoryError as exc:
        return _report(
            exc,
            RunFailure(
                "out of memory; lower [train] batch_size or max_residues (or --batch-size), the "
                "model's widths, or the number of --workers"
            ),
        )
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    finally:
        _help.defer_defaults = False
    return 0


def _report(exc: BaseException, error: ProtstepsError) -> int:
    """Print ``error`` as one line (the traceback of ``exc`` first under ``--debug``) and
    return its exit status."""
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 says it once
        return error.exit_code
    if options.debug:
        sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        sys.stderr.flush()
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    return error.exit_code


#: the system refusals that come from the machine rather than from what the user asked
_RUNTIME_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EIO,
    errno.ENOMEM,
    errno.EMFILE,
    errno.ENFILE,
}

_WAY_OUT = {
    errno.ENOSPC: "free some space on that disk, or write elsewhere (--out, --cache-dir)",
    errno.EDQUOT: "free some of your disk quota, or write elsewhere (--out, --cache-dir)",
    errno.EFBIG: "the file is larger than this system allows; write elsewhere (--out, --cache-dir)",
    errno.EROFS: "the disk is read-only; write elsewhere (--out, --cache-dir)",
    errno.EACCES: "check its permissions, or use another path",
    errno.EPERM: "check its permissions, or use another path",
    errno.EEXIST: "it is in the way; remove it or use another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; use another path",
    errno.EISDIR: "it is a folder where a file is expected; use another path",
    errno.ENOENT: "check the path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) or use fewer --workers",
    errno.ENFILE: "too many open files on this machine; use fewer --workers",
}


def os_error(exc: OSError) -> ProtstepsError:
    """The one-line error for an ``OSError`` that reached the command line: what failed on
    which file, and what to do (exit status 1 for a full disk and other refusals of the
    machine, 2 for a path the user gave that cannot be used)."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(names) if names else "reading or writing a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    way_out = _WAY_OUT.get(exc.errno or 0, "check the path and try again")
    message = f"{where}: {reason}; {way_out}"
    return RunFailure(message) if exc.errno in _RUNTIME_ERRNOS else ProtstepsError(message)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
