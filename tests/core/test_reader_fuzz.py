"""A bounded, seeded fuzz of both readers on mutations of real shared structures.

Truncations (at any byte and at a line boundary), deleted and duplicated lines, bytes changed
in coordinates, comment lines, CRLF line ends, tabs, missing values. For every mutant: no
exception but a StructureError; where both readers accept, the same chains, residues and
coordinates; for the mutations a reader should never disagree on, both accept or both refuse;
a file cut at a byte that is no line boundary is refused, or read whole.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest

from protsteps.errors import StructureError
from protsteps.structure import read_chains_from_bytes

MUTANTS = 300
SEED = 12
# Mutations after which one reader accepting and the other refusing is a bug. A changed
# coordinate byte or a '?' can rename a residue half-way, which Bio.PDB's mmCIF parser
# refuses and the columnar reader reads as a point mutation: for those, only readers that
# both accept are compared.
STRICT = {"cut", "cut_at_line", "delete", "duplicate", "comment", "crlf", "tabs"}


def _sources(structures_dir: Path) -> tuple[list, list]:
    rng = random.Random(SEED)
    pdb, cif = [], []
    for path in sorted(structures_dir.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_bytes()
        if text[:2] == b"\x1f\x8b":
            text = gzip.decompress(text)
        if len(text) < 150_000:
            name = path.with_name(path.name.removesuffix(".gz"))
            (cif if ".cif" in name.name else pdb).append((name, text))
    return rng.sample(pdb, 40), cif


def _mutate(rng: random.Random, text: bytes, cif: bool) -> tuple[str, bytes]:
    lines = text.split(b"\n")
    atoms = [i for i, line in enumerate(lines) if line.startswith((b"ATOM", b"HETATM"))]
    kind = rng.choice(
        ["cut", "cut_at_line", "delete", "duplicate", "flip", "comment", "crlf", "tabs", "missing"]
    )
    i = rng.choice(atoms)
    if kind == "cut":
        return kind, text[: rng.randrange(1, len(text))]
    if kind == "cut_at_line":
        return kind, b"\n".join(lines[: rng.randrange(1, len(lines))]) + b"\n"
    if kind == "crlf":
        return kind, text.replace(b"\n", b"\r\n")
    if kind == "delete":
        del lines[rng.randrange(len(lines))]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "flip":
        line = bytearray(lines[i])
        digits = [k for k, c in enumerate(line) if c in b"0123456789."]
        k = rng.choice(digits) if cif else rng.randrange(30, min(54, len(line)))
        line[k] = rng.choice(b"0123456789.- x?")
        lines[i] = bytes(line)
    elif kind == "comment":
        lines.insert(i, b"# a comment line" if cif else b"REMARK 999 A REMARK")
    elif kind == "tabs":
        line = lines[i]
        lines[i] = (
            line.replace(b" ", b"\t", 3) if cif else line[:30] + line[30:54].replace(b" ", b"\t") + line[54:]
        )
    else:  # missing
        if cif:
            tokens = lines[i].split()
            tokens[rng.randrange(len(tokens))] = rng.choice([b"?", b"."])
            lines[i] = b" ".join(tokens)
        else:
            lines[i] = lines[i][:54] + b"      " + lines[i][60:]
    return kind, b"\n".join(lines)


def _read(path: Path, data: bytes, reader: str):
    try:
        return read_chains_from_bytes(path, data, reader=reader)
    except StructureError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return None


def _difference(ours: list, theirs: list) -> str | None:
    if [c.chain_id for c in ours] != [c.chain_id for c in theirs]:
        return "chains"
    for a, b in zip(ours, theirs, strict=True):
        if a.sequence != b.sequence or not np.array_equal(a.residue_numbers, b.residue_numbers):
            return f"chain {a.chain_id}: residues"
        if list(a.insertion_codes) != list(b.insertion_codes):
            return f"chain {a.chain_id}: insertion codes"
        if not np.array_equal(a.backbone_mask, b.backbone_mask) or not np.array_equal(a.backbone, b.backbone):
            return f"chain {a.chain_id}: coordinates"
    return None


@pytest.mark.slow
def test_fuzzed_files_are_read_whole_or_refused_alike(structures_dir):
    rng = random.Random(SEED)
    pdb, cif = _sources(structures_dir)
    problems, kinds = [], set()
    for n in range(MUTANTS):
        is_cif = n % 3 == 0
        path, text = rng.choice(cif if is_cif else pdb)
        kind, data = _mutate(rng, text, is_cif)
        kinds.add(kind)
        fast, reference = _read(path, data, "columnar"), _read(path, data, "biopython")
        case = f"#{n} {kind} {path.name}"
        if fast is not None and reference is not None:
            if why := _difference(fast, reference):
                problems.append(f"{case}: the readers differ ({why})")
        elif (fast is None) != (reference is None) and kind in STRICT:
            problems.append(f"{case}: only the {'columnar' if fast else 'biopython'} reader accepts it")
        if kind == "cut" and not data.endswith(b"\n") and fast is not None:
            whole = _read(path, text, "columnar")
            if whole is None or _difference(fast, whole):
                problems.append(f"{case}: a cut file read in part")
    assert len(kinds) == 9
    assert not problems
