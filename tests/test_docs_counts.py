"""Counts of the shared structures that the documentation states match the files."""

from __future__ import annotations

import re

from .conftest import ROOT

#: phrasings the documentation uses for the number of files in ../shared/data/structures
_PHRASES = [
    re.compile(r"\bthe ([\d,]+) shared structures\b"),
    re.compile(r"\bsorted list of all ([\d,]+) \(every"),
    re.compile(r"\bthe ([\d,]+) structure files of `\.\./shared/data/structures`"),
]


def test_the_documented_count_of_shared_structures_is_the_real_one(structures_dir):
    files = sum(1 for p in structures_dir.rglob("*") if p.is_file())
    stated = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = " ".join(page.read_text("utf-8").split())  # phrases broken over lines
        for phrase in _PHRASES:
            stated += [(page.name, int(m.group(1).replace(",", ""))) for m in phrase.finditer(text)]
    assert stated, "no documented count found: update the phrases this test looks for"
    assert [s for s in stated if s[1] != files] == [], f"the shared structures are {files} files"
