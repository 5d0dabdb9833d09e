"""Freed tensor memory kept for reuse on CPU instead of handed back to the system.

torch's CPU tensors come from the C library's ``malloc``. glibc serves a block above its
mmap threshold (128 KiB at first, raised as blocks are freed, up to 32 MiB) with a fresh
``mmap`` and gives it back to the system on ``free``; the heap's free top beyond the trim
threshold goes back too. The next tensor then lands on fresh pages: one page fault per
4 KiB, each a trip into the kernel that zeroes the page. A training step allocates and
frees the same few-megabyte tensors again and again (the default step's ``[2048, 256]``
pair tensors are 2 MiB each), so it pays those faults every step: about 630 minor faults
and 1.4 ms of system time per default step on this project's test machine, 47 and 0.2 ms
with freed memory kept (``benchmarks/allocator.py``; docs/benchmarks.md). On GPUs torch's
caching allocator does the keeping.

:func:`keep_freed_memory` asks glibc (``mallopt``) to serve blocks up to 32 MiB from its
heap and to keep up to 1 GiB of freed heap for reuse. It is process-wide, so the command
line, which owns its process, calls it before ``pretrain``, ``finetune`` and ``embed``;
code that uses protsteps as a library may call it too. The price is that the process
does not shrink after a peak: memory freed below that peak stays with it for the next
step.

It changes nothing, and says why, when the C library is not glibc, when the user tuned
glibc's allocator already (``GLIBC_TUNABLES`` with ``glibc.malloc.``), when another
allocator is preloaded (``LD_PRELOAD``: jemalloc, tcmalloc, mimalloc), or when
``PROTSTEPS_MALLOC=system`` asks for the C library's own behaviour.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["ENVIRONMENT", "KEEP_BYTES", "MMAP_THRESHOLD", "keep_freed_memory"]

#: ``PROTSTEPS_MALLOC=system`` leaves the C library's allocator as it is
ENVIRONMENT = "PROTSTEPS_MALLOC"
#: blocks up to this size come from the heap (glibc's largest dynamic threshold)
MMAP_THRESHOLD = 32 << 20
#: freed heap memory kept for reuse before any is given back to the system
KEEP_BYTES = 1 << 30

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")

_STATE: dict[str, str] = {}


def _libc() -> ctypes.CDLL | None:
    """The process's glibc, or ``None`` where the C library is another."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        libc.mallopt  # noqa: B018 - present in every glibc
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc


def keep_freed_memory() -> str:
    """Make glibc keep freed tensor memory for reuse (see the module docs), once per process.
    Returns what was done, or why nothing was (the same answer on later calls)."""
    if "done" in _STATE:
        return _STATE["done"]
    _STATE["done"] = answer = _keep_freed_memory()
    return answer


def _keep_freed_memory() -> str:
    if os.environ.get(ENVIRONMENT, "").strip().lower() == "system":
        return f"allocator left as it is ({ENVIRONMENT}=system)"
    preloaded = [name for name in _PRELOADED if name in os.environ.get("LD_PRELOAD", "")]
    if preloaded:
        return f"allocator left as it is ({preloaded[0]} is preloaded)"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "allocator left as it is (GLIBC_TUNABLES sets glibc.malloc)"
    libc = _libc()
    if libc is None:
        return "allocator left as it is (the C library is not glibc)"
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, KEEP_BYTES), (_M_TOP_PAD, 64 << 20))
    refused = [name for name, value in settings if libc.mallopt(name, value) != 1]
    if refused:
        return f"allocator partly set (glibc refused mallopt parameters {refused})"
    return (
        f"allocator keeps freed memory (blocks up to {MMAP_THRESHOLD >> 20} MiB from the heap, "
        f"{KEEP_BYTES >> 20} MiB kept)"
    )
