"""``--group-column``: whole groups to one side of a drawn split, stratified as far as groups
allow; checked as a property over many seeds and shares on the shared cluster-labelled sets."""

from __future__ import annotations

from collections import defaultdict

import pytest

from protsteps.downstream._finetune import assign_splits
from protsteps.downstream._labels import merge_duplicate_rows, read_manifest

SETS = [("enzyme_class_chains.tsv", "ec_class"), ("scop2_class_chains.tsv", "scop2_class")]
SHARES = [(0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.7, 0.3, 0.0)]


@pytest.mark.parametrize(("name", "column"), SETS)
def test_no_sequence_cluster_straddles_two_splits(shared_data, name, column):
    data = merge_duplicate_rows(
        read_manifest(shared_data / "labels" / name, label_column=column, group_column="sequence_cluster")
    )
    rows = data.rows
    assert len(rows) >= 60 and all(r.group for r in rows)
    clusters: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        clusters[row.group or ""].append(i)
    assert any(len(members) > 1 for members in clusters.values())  # the property can fail
    # a cluster counts for the class of its first row
    strata: dict[str, list[str]] = defaultdict(list)
    for members in clusters.values():
        strata[rows[members[0]].labels[0]].append(rows[members[0]].group or "")
    for shares in SHARES:
        for seed in range(40):
            splits, notes = assign_splits(rows, shares, seed, multi=False)
            assert "rows of one group kept together" in notes[0]
            side = {}
            for group, members in clusters.items():
                sides = {splits[i] for i in members}
                assert len(sides) == 1, f"{name} seed {seed}: cluster {group} on {sorted(sides)}"
                side[group] = sides.pop()
            # stratified: each class's clusters in a held-out part are its share, give or take one
            for label, groups in strata.items():
                for part, share in (("valid", shares[1]), ("test", shares[2])):
                    got = sum(side[g] == part for g in groups)
                    assert abs(got - len(groups) * share) < 1 + 1e-9, (
                        f"{name} seed {seed} {shares}: class {label} has {got} of {len(groups)} clusters in {part}"
                    )
