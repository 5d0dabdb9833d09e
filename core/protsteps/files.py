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

It also holds what keeps a run folder to one writer (:func:`run_folder_lock`, which also
clears the temporary files of writes that a kill cut short) and strict JSON lines for the
metrics files (:func:`strict_json_line`).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from .errors import ProtstepsError, RunFailure

__all__ = [
    "FolderInUseError",
    "LOCK_NAME",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_path",
    "atomic_write_text",
    "prepare_output_folder",
    "remove_stale_temporaries",
    "run_folder_lock",
    "strict_json_line",
    "writable_folder",
]


@contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """A new temporary file beside ``path``, as ``(fd, name)`` (the block owns the
    descriptor), moved over ``path`` when the block ends and removed when it raises. An
    ``OSError`` that names no file (a write to the open file on a full disk) is raised again
    naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, fsync: bool = True
) -> None:
    """Call ``write(fh)`` on a temporary binary file, then move it to ``path``.

    ``fsync=False`` keeps the all-or-nothing rename but skips forcing the data to disk, for
    files that can be rebuilt (caches), where the flush would dominate the cost.
    """
    with _replacing(Path(path)) as (fd, _), os.fdopen(fd, "wb") as fh:
        write(fh)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())


def atomic_write_path(
    path: str | os.PathLike[str], write: Callable[[Path], Any], *, fsync: bool = True
) -> None:
    """Call ``write(tmp)`` with the path of a new, empty temporary file beside ``path``, for
    writers that open their file by name (h5py), then move it to ``path``; as
    :func:`atomic_write` otherwise."""
    with _replacing(Path(path)) as (fd, tmp):
        os.close(fd)
        write(Path(tmp))
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


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


def unreadable_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in a few words: never torch's
    advice to re-run with ``weights_only=False`` (which would run whatever code a crafted
    file holds), only what the file holds that protsteps does not read."""
    text = str(exc)
    if "weights_only" in text or "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (
                f"it holds a Python object ({found.group(1)}) and protsteps reads only tensors, numbers "
                "and strings from its files"
            )
        return "it is not a file of tensors, numbers and strings that torch.save writes (damaged, or another format)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def read_torch_record(path: Path, what: str, record_format: int) -> dict[str, Any]:
    """A dict written with :func:`atomic_torch_save`, loaded with ``weights_only=True``
    (no code runs), whose ``"format"`` entry is ``record_format``; otherwise a
    :class:`~protsteps.errors.ProtstepsError` naming ``what`` (e.g. "checkpoint"), the path
    and the reason."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ProtstepsError(f"{what} {path} does not exist") from None
    except Exception as exc:
        raise ProtstepsError(f"{what} {path} cannot be read: {unreadable_reason(exc)}") from None
    if not isinstance(record, dict) or record.get("format") != record_format:
        raise ProtstepsError(f"{path} is not a protsteps {what} (format {record_format})")
    return record


# ---------------------------------------------------------------------------- run folders

#: the lock file of a run folder (holds the pid and command of the process that writes it)
LOCK_NAME = ".protsteps.lock"

#: the name :func:`_create_temporary` gives a temporary file
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


class FolderInUseError(RunFailure):
    """Another process holds the run folder's lock."""


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``folder`` and its
    direct subfolders (``checkpoints/``); only call it while holding the folder's lock.
    Returns what was removed."""
    folder = Path(folder)
    removed = []
    places = [folder, *(p for p in _entries(folder) if p.is_dir() and not p.is_symlink())]
    for place in places:
        for entry in _entries(place):
            if _TEMPORARY.match(entry.name) and entry.is_file() and not entry.is_symlink():
                try:
                    entry.unlink()
                except FileNotFoundError:
                    continue
                removed.append(entry)
    return removed


def writable_folder(folder: str | os.PathLike[str], subject: str, hint: str) -> Path:
    """Create ``folder`` (and its parents) and check that it can be written, before any work;
    otherwise a :class:`ProtstepsError` in one line, ``"{subject} is a file, not a folder;
    {hint}"`` (or ``"... is not writable"``, ``"... cannot be created (reason)"``, or that a
    part of its path is a file). ``subject`` names the folder as the user gave it (with the
    option that gave it); ``hint`` says what to do instead."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ProtstepsError(f"{subject} is a file, not a folder; {hint}") from None
    except NotADirectoryError:
        raise ProtstepsError(f"{subject}: a part of its path is a file, not a folder; {hint}") from None
    except OSError as exc:
        raise ProtstepsError(f"{subject} cannot be created ({exc.strerror or exc}); {hint}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProtstepsError(f"{subject} is not writable; {hint}")
    return folder


def prepare_output_folder(folder: str | os.PathLike[str], option: str = "") -> Path:
    """Create ``folder`` (and its parents) for output, before any work: a path that is a
    file, or a folder that cannot be created or written, is a :class:`ProtstepsError` in one
    line naming it (and ``option``, the command-line option that gave it)."""
    given = f"{option} {folder}" if option else str(folder)
    return writable_folder(folder, given, "give a folder you can write for the output")


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


@contextmanager
def run_folder_lock(folder: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold an exclusive lock on the run folder ``folder`` (created if needed) for the
    block: ``fcntl.flock`` on ``folder/.protsteps.lock``, which records this process's pid
    and ``command``. Another process that asks for it meanwhile gets a
    :class:`FolderInUseError` naming the holder's pid and the folder. Once the lock is held,
    the temporary files of writes that a kill cut short are removed
    (:func:`remove_stale_temporaries`). The lock goes with the process (a killed holder
    leaves no stale lock). Where ``fcntl`` is missing (Windows) the folder is not locked."""
    folder = prepare_output_folder(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        remove_stale_temporaries(folder)
        yield folder / LOCK_NAME
        return
    path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise RunFailure(f"{folder}: cannot create its lock file {path} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            pid = holder[0] if holder and holder[0].isdigit() else "unknown"
            what = f" ({' '.join(holder[1:])})" if len(holder) > 1 else ""
            raise FolderInUseError(
                f"{folder} is in use by another protsteps process (pid {pid}{what}); one process "
                "writes a run folder at a time: wait for it to end, or give another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        remove_stale_temporaries(folder)
        yield path
    finally:
        os.close(fd)  # releases the lock


def strict_json_line(record: Mapping[str, Any]) -> str:
    """``record`` as one line of strict JSON: a NaN or infinite number becomes ``null`` and
    its key is listed under ``"nonfinite"`` (``{"loss": null, "nonfinite": ["loss"]}``;
    nested keys as ``a.b``), so every line parses with any JSON reader."""
    nonfinite: list[str] = []

    def clean(value: Any, key: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite.append(key)
            return None
        if isinstance(value, Mapping):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(record, "")
    if nonfinite:
        cleaned["nonfinite"] = nonfinite
    return json.dumps(cleaned, allow_nan=False)
