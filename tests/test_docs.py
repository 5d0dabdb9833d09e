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


def _toml_blocks(text: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.strip() == "```toml":
            inside, current = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_run_files_shown_in_the_docs_are_valid():
    import tomllib

    from protsteps.registry import default_catalog
    from protsteps.runconfig import SECTIONS, RunConfig

    checked = 0
    # plugins.md shows the example plugin's components, which are not installed here
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name == "plugins.md":
            continue
        for block in _toml_blocks(page.read_text()):
            data = tomllib.loads(block)
            if data and set(data) <= set(SECTIONS):
                RunConfig.from_dict(data, default_catalog())
                checked += 1
    assert checked >= 3
