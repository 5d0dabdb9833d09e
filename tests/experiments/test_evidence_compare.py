"""The re-run check of the evidence experiment: estimates inside or outside the reference's
intervals, identical cells told apart, and the exit status a script can rely on."""

from __future__ import annotations

import copy
import json

import evidence_compare


def results(no_teacher: list[list[float]], teacher: list[list[float]], difference: float) -> dict:
    def setting(cells: list[list[float]]) -> dict:
        flat = [v for row in cells for v in row]
        mean = sum(flat) / len(flat)
        return {"macro_f1": {"mean": mean, "low": mean - 0.05, "high": mean + 0.05}, "cells": cells}

    return {
        "sets": {"ec": {"no-teacher/probe": setting(no_teacher), "teacher/probe": setting(teacher)}},
        "families": {"primary": {"ec/C/probe": {"mean": difference, "low": -0.02, "high": 0.06, "cells": 4}}},
    }


def check_files(folder, reference: dict, rerun: dict) -> int:
    """The command on the two results written as files: its exit status."""
    paths = [folder / "reference.json", folder / "rerun.json"]
    for path, data in zip(paths, (reference, rerun), strict=True):
        path.write_text(json.dumps(data))
    return evidence_compare.main([str(p) for p in paths])


def test_a_rerun_inside_the_intervals_passes_and_identical_rows_are_named(tmp_path, capsys):
    reference = results([[0.5, 0.6], [0.4, 0.5]], [[0.6, 0.7], [0.5, 0.6]], 0.02)
    rerun = copy.deepcopy(reference)
    rerun["sets"]["ec"]["teacher/probe"] = results([[0.5]], [[0.7, 0.6], [0.5, 0.62]], 0.0)["sets"]["ec"][
        "teacher/probe"
    ]
    rerun["families"]["primary"]["ec/C/probe"]["mean"] = 0.05
    rows = evidence_compare.compare(reference, rerun)
    assert [r.inside for r in rows] == [True, True, True]
    assert rows[0].cell_difference == 0.0
    assert abs(rows[1].cell_difference - 0.1) < 1e-12
    assert check_files(tmp_path, reference, rerun) == 0
    printed = capsys.readouterr().out
    assert "| ec no-teacher/probe | 0.500 | [0.450, 0.550] | 0.500 | yes | identical |" in printed
    assert "3 of 3 re-run estimates inside" in printed and "1 setting rows identical" in printed


def test_an_estimate_outside_or_missing_fails(tmp_path, capsys):
    reference = results([[0.5, 0.6]], [[0.6, 0.7]], 0.02)
    rerun = copy.deepcopy(reference)
    rerun["families"]["primary"]["ec/C/probe"]["mean"] = 0.07  # past the high end, 0.06
    del rerun["sets"]["ec"]["teacher/probe"]
    rows = evidence_compare.compare(reference, rerun)
    assert [r.inside for r in rows] == [True, False, False]
    assert check_files(tmp_path, reference, rerun) == 1
    printed = capsys.readouterr().out
    assert "| ec teacher/probe | 0.650 | [0.600, 0.700] | missing | **no** | n/a |" in printed
    assert "| primary ec/C/probe | +0.020 | [-0.020, +0.060] | +0.070 | **no** | n/a |" in printed
