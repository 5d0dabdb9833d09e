"""Small helpers for messages."""

from __future__ import annotations

__all__ = ["count"]


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, in the plural unless ``number`` is 1: ``count(1, "file")`` is
    ``1 file``, ``count(2, "file")`` is ``2 files``, ``count(3, "class", "classes")``."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
