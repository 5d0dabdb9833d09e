"""The example structures bundled in the package."""

from __future__ import annotations

import protsteps
from protsteps import examples
from protsteps.featurize import featurize_many


def test_examples_cover_the_formats_and_stay_small():
    paths = examples.structures()
    assert len(paths) == 8
    assert {p.name.split(".", 1)[1] for p in paths} == {"pdb", "pdb.gz", "cif", "cif.gz"}
    assert sum(p.stat().st_size for p in paths) < 1.5 * 2**20
    assert all(p.parent == examples.structures_dir() for p in paths)


def test_every_example_featurizes(tmp_path):
    report = featurize_many(examples.structures(), cache_dir=tmp_path)
    assert report.failed == []
    assert len(report.ok) == 9
    assert all(30 <= row["residues"] <= 300 for row in report.ok)
    # 1LCD holds DNA next to the protein: only the protein chain is read
    (lac,) = protsteps.featurize(examples.structures_dir() / "1LCD.pdb.gz")
    assert lac.num_nodes == 51 and set(lac.sequence) <= set("ACDEFGHIKLMNPQRSTVWY")
