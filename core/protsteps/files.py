"""Atomic file writes (a reader sees the old file or the new one, never half of one) and
reading back the records protsteps writes.

Each write goes to a temporary file in the destination's folder, is flushed and fsynced,
and is renamed over the destination (``os.replace`` is atomic on POSIX and Windows). A
process killed mid-write leaves at worst a stray ``.tmp`` file beside an intact original.

The temporary file is created with mode ``0o666`` and the process's umask, exactly as
``open(path, "w")`` would create the destination (``tempfile.mkstemp`` would make every
file ``0o600``, unreadable to teammates and to other users of a shared cache); the kernel
applies the umask (and a folder's default ACL) itself, so nothing reads or changes the
process-wide umask.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, fsync: bool = True
) -> None:
    """Call ``write(fh)`` on a temporary binary file, then move it to ``path``.

    ``fsync=False`` keeps the all-or-nothing rename but skips forcing the data to disk, for
    files that can be rebuilt (caches), where the flush would dominate the cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


#: flags of a new temporary file: exclusive (never an existing file or a planted symlink)
_TEMP_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` (``.NAME.<random>.tmp``), open for writing, with the
    permissions the umask gives a new file (``0o644`` under the usual ``022``)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {path}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that never leaves a truncated file at ``path``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_torch_record(path: Path, what: str, record_format: int) -> dict[str, Any]:
    """A dict written with :func:`atomic_torch_save`, loaded with ``weights_only=True``
    (no code runs), whose ``"format"`` entry is ``record_format``; otherwise a
    :class:`~protsteps.errors.ProtstepsError` naming ``what`` (e.g. "checkpoint"), the path
    and the reason."""
    from .errors import ProtstepsError

    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ProtstepsError(f"{what} {path} does not exist") from None
    except Exception as exc:
        raise ProtstepsError(f"{what} {path} cannot be read: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != record_format:
        raise ProtstepsError(f"{path} is not a protsteps {what} (format {record_format})")
    return record
