"""Work functions for the worker-pool test, in a module light enough that a spawned
process imports it in milliseconds (no torch)."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass
class Result:
    source: str
    ok: list
    errors: list


def die_on_poison(item: str) -> Result:
    """A process asked to work on "poison" dies on the spot, as one killed for memory does."""
    if item == "poison":
        os._exit(1)
    return Result(item, [item], [])


def no_setup() -> None:
    pass
