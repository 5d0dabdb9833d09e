"""The generated reference pages match the code (run python docs/generate.py to update)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_pages_are_up_to_date():
    generate = _generator()
    for name, make in generate.PAGES.items():
        page = ROOT / "docs" / "reference" / name
        assert page.read_text() == make(), f"docs/reference/{name} is stale: run python docs/generate.py"
