"""Does a re-run of the evidence experiment reproduce a reference run within its intervals?

    python experiments/evidence_compare.py docs/experiments/results.json runs/evidence/results.json

Both files are the ``results.json`` that ``experiments/evidence.py`` writes. For every
estimate of the reference (each setting's mean test macro-F1 per set and mode, and each
comparison's mean difference) it prints the reference mean and 95% interval, the re-run's
mean, whether that mean lies inside the reference interval, and the largest difference of a
single (pretraining seed, split seed) cell. It ends with the count of estimates inside and
exits with 1 when any is outside or missing, so that a script can check a re-run.

Rows whose cells are all equal to the last bit are marked ``identical``: with the same
commit and torch build, settings without a teacher are expected to be (CPU training on one
thread is deterministic); a difference there is a change of code, data or library, not of
chance.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Row", "compare", "main"]


class Row:
    """One estimate of the reference against the re-run."""

    def __init__(
        self,
        name: str,
        reference: dict[str, Any],
        rerun: dict[str, Any] | None,
        signed: bool = False,
        cell_difference: float | None = None,
    ) -> None:
        self.name, self.signed, self.cell_difference = name, signed, cell_difference
        self.mean, self.low, self.high = reference["mean"], reference["low"], reference["high"]
        self.rerun = None if rerun is None else float(rerun["mean"])
        self.inside = self.rerun is not None and self.low <= self.rerun <= self.high

    def markdown(self) -> str:
        f = "{:+.3f}" if self.signed else "{:.3f}"
        rerun = "missing" if self.rerun is None else f.format(self.rerun)
        cells = "identical" if self.cell_difference == 0.0 else _number(self.cell_difference)
        return (
            f"| {self.name} | {f.format(self.mean)} | [{f.format(self.low)}, {f.format(self.high)}] | {rerun} | "
            f"{'yes' if self.inside else '**no**'} | {cells} |"
        )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cells(entry: dict[str, Any]) -> list[float] | None:
    cells = entry.get("cells")
    if not isinstance(cells, list):  # a comparison stores its cell count, not its cells
        return None
    return [float(v) for row in cells for v in row]


def _largest_difference(a: list[float] | None, b: list[float] | None) -> float | None:
    if a is None or b is None or len(a) != len(b):
        return None
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) and math.isnan(y))]
    return max((abs(x - y) for x, y in pairs), default=0.0)


def _estimates(results: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], list[float] | None, bool]]:
    """(name, estimate, its cells where kept, whether it is a difference) of every estimate."""
    for name, rows in results["sets"].items():
        for key, entry in rows.items():
            yield f"{name} {key}", entry["macro_f1"], _cells(entry), False
    for family, rows in results["families"].items():
        for key, entry in rows.items():
            yield f"{family} {key}", entry, None, True


def compare(reference: dict[str, Any], rerun: dict[str, Any]) -> list[Row]:
    """One :class:`Row` per estimate of ``reference``, in its order."""
    found = {name: (entry, cells) for name, entry, cells, _ in _estimates(rerun)}
    rows = []
    for name, entry, cells, signed in _estimates(reference):
        other, other_cells = found.get(name, (None, None))
        rows.append(Row(name, entry, other, signed, _largest_difference(cells, other_cells)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reference", type=Path, help="results.json of the reference run")
    parser.add_argument("rerun", type=Path, help="results.json of the re-run")
    args = parser.parse_args(argv)
    rows = compare(*(json.loads(path.read_text()) for path in (args.reference, args.rerun)))
    print("| estimate | reference | 95% interval | re-run | inside | largest cell difference |")
    print("| --- | ---: | --- | ---: | --- | ---: |")
    for row in rows:
        print(row.markdown())
    inside = sum(row.inside for row in rows)
    identical = sum(row.cell_difference == 0.0 for row in rows)
    print(
        f"\n{inside} of {len(rows)} re-run estimates inside the reference's 95% intervals; "
        f"{identical} setting rows identical in every cell"
    )
    return 0 if inside == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
