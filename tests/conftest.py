"""Shared fixtures. Real structures come from ../shared/data (read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROTSTEPS_SHARED_DATA", ROOT.parent / "shared" / "data"))
STRUCTURES = SHARED_DATA / "structures"
LABELS = SHARED_DATA / "labels"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it are skipped with a reason where it is absent."""
    if not STRUCTURES.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set PROTSTEPS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def structures_dir(shared_data: Path) -> Path:
    return shared_data / "structures"
