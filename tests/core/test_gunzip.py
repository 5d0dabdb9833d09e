"""Gunzipping a structure file: ISA-L's inflate (isal) and zlib's give the same content and
the same refusals, for one member, several, padding, trailing data, cuts and corruption."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from protsteps.errors import StructureError
from protsteps.structure import _io

isal_zlib = pytest.importorskip("isal.isal_zlib")


@pytest.fixture(params=["zlib", "isal"])
def inflate(request, monkeypatch):
    if request.param == "zlib":
        monkeypatch.setattr(_io, "_inflate", zlib)
    else:
        monkeypatch.setattr(_io, "_inflate", isal_zlib)
    return request.param


def outcome(data: bytes, max_bytes: int = _io.DEFAULT_MAX_BYTES) -> bytes | str:
    try:
        return _io.decompress(Path("x.pdb.gz"), data, max_bytes)
    except StructureError as exc:
        return str(exc).split(" (")[0]


@pytest.fixture(scope="module")
def text(structures_dir) -> bytes:
    return gzip.decompress((structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes())


def test_isal_is_the_inflater_in_use():
    assert _io._inflate is isal_zlib


def test_same_content_and_refusals(inflate, text):
    whole = gzip.compress(text)
    assert outcome(whole) == text
    assert outcome(gzip.compress(text[:1000]) + gzip.compress(text[1000:])) == text  # two members
    assert outcome(whole + b"\x00" * 64) == text  # tape padding
    assert outcome(whole + b"junk") == "x.pdb.gz: corrupt gzip file"
    assert outcome(whole[: len(whole) // 2]) == "x.pdb.gz: truncated gzip file"
    broken = bytearray(whole)
    broken[len(broken) // 2] ^= 0xFF
    assert str(outcome(bytes(broken))).startswith("x.pdb.gz: ")  # refused, never read in part
    assert outcome(whole, max_bytes=len(text) - 1).startswith("x.pdb.gz: decompresses to more than")
