"""Warnings about splits that let a protein be scored on what it was trained on.

A split leaks when one protein sits on two sides of it: the same structure file (the same
path once links are resolved, or the same bytes under another name) with the same chain,
the same PDB chain under two files (a ``pdb_chain``-like column of the manifest: the
upper- and lower-case copies of one complex, a ``.pdb`` and a ``.cif`` of one entry), the
same sequence, or one value of the group column. Rows linked by any of these form one
protein; a protein whose rows are in more than one split is reported. A test set of fewer
than :data:`SMALL_TEST` proteins is reported too: one protein more or less right moves its
accuracy by a tenth or more.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ._labels import LabelledChain, Split

__all__ = ["SMALL_TEST", "find_pdb_chain_column", "leakage_notes", "normalize_pdb_chain", "small_test_note"]

#: a test set with fewer proteins than this gets a warning
SMALL_TEST = 10

#: a PDB chain written as ``1abc.A``, ``1abc_A``, ``1abc-A``, ``1abc:A`` or ``1abcA``
_PDB_CHAIN = re.compile(r"^([0-9][A-Za-z0-9]{3})[._:\-]?([A-Za-z0-9]{1,4})$")


def normalize_pdb_chain(value: str) -> str | None:
    """``1AVX_B``, ``1avx.b``, ``1avxB`` -> ``1avx.b``; ``None`` when ``value`` is not a
    PDB chain. Chain ids are compared in lower case, as the shared labelled sets write
    them."""
    match = _PDB_CHAIN.match(value.strip())
    return f"{match.group(1).lower()}.{match.group(2).lower()}" if match else None


def find_pdb_chain_column(
    header: Sequence[str], rows: Sequence[dict[str, str]], used: Sequence[str]
) -> str | None:
    """The manifest column naming each row's PDB chain, if there is one: a column whose name
    holds ``pdb`` and whose non-empty values are all PDB chains (``1abc.A``, ``1abc_A``);
    ``pdb_chain`` is taken first. Columns in ``used`` (path, label, split, group) are not
    considered."""
    candidates = [c for c in header if "pdb" in c.lower() and c not in used]
    candidates.sort(key=lambda c: (c.lower() != "pdb_chain", header.index(c)))
    for column in candidates:
        values = [row.get(column, "") for row in rows]
        present = [v for v in values if v]
        if present and all(normalize_pdb_chain(v) for v in present):
            return column
    return None


class _Links:
    """Union-find over row indices."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _file_identities(paths: Sequence[str]) -> list[str]:
    """One identity per path: the resolved path, or, for files of equal size and equal
    bytes, the bytes' digest (so a copy under another name is the same file)."""
    real = [os.path.realpath(p) for p in paths]
    sizes: dict[int, list[str]] = {}
    for path in dict.fromkeys(real):
        try:
            sizes.setdefault(os.path.getsize(path), []).append(path)
        except OSError:
            continue
    digest: dict[str, str] = {}
    for same_size in sizes.values():
        if len(same_size) < 2:
            continue
        for path in same_size:
            try:
                hasher = hashlib.sha256()
                with open(path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        hasher.update(block)
                digest[path] = "sha256:" + hasher.hexdigest()
            except OSError:
                continue
    return [digest.get(path, path) for path in real]


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def leakage_notes(
    rows: Sequence[LabelledChain],
    chains: Sequence[str],
    sequences: Sequence[str],
    splits: Sequence[Split],
    *,
    group_column: str | None = None,
    pdb_chain_column: str | None = None,
    columns: Sequence[str] = (),
) -> list[str]:
    """Warnings for proteins on two sides of the split (empty when there are none).

    ``rows``, ``chains`` (the chain each row was featurized as), ``sequences`` and
    ``splits`` are parallel. ``columns`` (the manifest's header) lets the advice name a
    column to group by.
    """
    count = len(rows)
    links = _Links(count)
    reasons: dict[tuple[str, object], list[int]] = {}
    identities = _file_identities([r.path for r in rows])
    for i, row in enumerate(rows):
        keys: list[tuple[str, object]] = [
            ("the same structure", (identities[i], chains[i])),
            ("the same sequence", sequences[i]),
        ]
        if row.pdb_chain:
            keys.append((f"the same {pdb_chain_column or 'PDB chain'}", row.pdb_chain))
        if row.group is not None and group_column:
            keys.append((f"the same {group_column}", row.group))
        for key in keys:
            reasons.setdefault(key, []).append(i)
    why: dict[tuple[int, int], set[str]] = {}
    for (reason, _), members in reasons.items():
        if len({splits[i] for i in members}) < 2:
            continue
        for i in members[1:]:
            links.union(members[0], i)
        for i in members:
            for j in members:
                if i < j and splits[i] != splits[j]:
                    why.setdefault((i, j), set()).add(reason)
    components: dict[int, list[int]] = {}
    for i in range(count):
        components.setdefault(links.find(i), []).append(i)
    leaking = [m for m in components.values() if len({splits[i] for i in m}) > 1]
    if not leaking:
        return []
    examples = []
    for members in leaking[:3]:
        pair = next(p for p in sorted(why) if p[0] in members)
        described = ", ".join(f"{_short(rows[i].path)}:{chains[i]} ({splits[i]})" for i in pair)
        examples.append(f"{described}: {' and '.join(sorted(why[pair]))}")
    more = f"; and {len(leaking) - 3} more" if len(leaking) > 3 else ""
    proteins = "1 protein is" if len(leaking) == 1 else f"{len(leaking)} proteins are"
    cluster = next((c for c in columns if "cluster" in c.lower()), None)
    advice = cluster or pdb_chain_column
    fix = (
        f"draw the split with --group-column {advice} to keep them together"
        if advice
        else "give each row a group column (a sequence cluster, or the PDB chain) and draw the split "
        "with --group-column"
    )
    return [
        f"warning: {proteins} in more than one split, so the validation and test scores are "
        f"optimistic: {'; '.join(examples)}{more}; {fix}"
    ]


def small_test_note(proteins: int) -> list[str]:
    """A warning when the test set has fewer than :data:`SMALL_TEST` proteins."""
    if proteins >= SMALL_TEST:
        return []
    share = 1 / proteins if proteins else 1.0
    return [
        f"warning: the test set has only {proteins} protein{'' if proteins == 1 else 's'}: one protein "
        f"more or less right moves its accuracy by {share:.2f}; its scores say little (use more "
        "labelled structures, or a larger test share with --split)"
    ]
