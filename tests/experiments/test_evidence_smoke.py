"""The evidence experiment end to end at the smoke budget: splits by cluster, a pool that
shares no cluster with a labelled chain, the tables and the figure, and a resumed run that
redoes nothing."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest


def _tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_link_rule_matches_the_clustering_rule():
    import evidence_pool as P

    aligner = P._aligner()
    a = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWUTPSR"
    a = P._clean(a)  # U (selenocysteine) is not a BLOSUM62 letter: X
    assert P.link(aligner, a, a)[0] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    half = list(a)
    for i in rng.choice(len(a), size=len(a) // 2, replace=False):
        half[i] = letters[rng.integers(20)]
    linked = P.link(aligner, P._clean("".join(half)), P._clean(a))
    assert linked is not None and 0.4 <= linked[0] < 0.8
    unrelated = "".join(rng.choice(letters, size=len(a)))
    assert P.link(aligner, unrelated, P._clean(a)) is None


@pytest.mark.usefixtures("shared_data")
def test_smoke_pipeline_end_to_end(tmp_path, monkeypatch):
    import evidence
    import evidence_pool as P

    from protsteps.structure import read_chains

    out = tmp_path / "ev"
    argv = ["--out", str(out), "--budget", "smoke", "--sets", "scop2"]
    argv += ["--settings", "majority", "raw-inputs", "random-encoder", "pretrained-no-teacher"]
    assert evidence.main(argv) == 0
    evidence.prepare_data(out, "ec", evidence.BUDGETS["smoke"])  # the EC set's data and splits alone

    # splits: every sequence cluster on one side, all sides present, identical chains per seed
    for name in ("ec", "scop2"):
        chains = _tsv(out / "data" / name / "chains.tsv")
        for seed in evidence.BUDGETS["smoke"].split_seeds:
            rows = _tsv(out / "splits" / name / f"split{seed}.tsv")
            assert [r["path"] for r in rows] == [r["path"] for r in chains]
            sides: dict[str, set[str]] = {}
            for r in rows:
                sides.setdefault(r["group"], set()).add(r["split"])
            assert all(len(s) == 1 for s in sides.values()), sides
            assert {r["split"] for r in rows} == {"train", "valid", "test"}
        if name == "ec":
            assert {r["label"] for r in chains} <= {"1", "2", "3", "4-6"}

    # the pool: nothing left out without a reason, no file or PDB id of a labelled chain,
    # and no pool chain links to any labelled chain by the clustering rule
    labelled = P.read_labelled(
        [
            (evidence.SHARED / "labels" / "enzyme_class_chains.tsv", "superfamily"),
            (evidence.SHARED / "labels" / "scop2_class_chains.tsv", "scop2_superfamily"),
        ]
    )
    excluded = _tsv(out / "pool" / "excluded.tsv")
    assert all(r["rule"] and r["reason"] for r in excluded)
    assert {r["rule"] for r in excluded} >= {"labelled file", "sequence cluster"}
    pool = (out / "pool" / "pretrain_inputs.txt").read_text().split()
    assert pool and not {p for p in pool} & {r["path"] for r in excluded}
    labelled_files = {r.path for r in labelled}
    labelled_ids = {r.pdb for r in labelled}
    labelled_sequences = {P._clean(c.sequence) for r in labelled for c in read_chains(r.path, [r.chain])}
    aligner = P._aligner()
    for path in pool:
        assert path not in labelled_files
        assert path.rsplit("/", 1)[1][:4].lower() not in labelled_ids
        for chain in read_chains(path):
            sequence = P._clean(chain.sequence)
            assert sequence not in labelled_sequences, f"{path}:{chain.chain_id}"
            assert not any(P.link(aligner, sequence, other) for other in labelled_sequences), (
                f"{path}:{chain.chain_id}"
            )

    # results: every unit there, per-chain predictions kept, tables, figure, record
    results = json.loads((out / "results.json").read_text())
    assert set(results["sets"]) == {"scop2"}
    assert "scop2/A/probe" in results["families"]["primary"]
    assert "scop2/A/full" in results["families"]["secondary"]
    probe = json.loads((out / "probe" / "scop2" / "pretrained-no-teacher" / "p1_s1.json").read_text())
    assert probe["l2"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    test_rows = [r for r in _tsv(out / "splits" / "scop2" / "split1.tsv") if r["split"] == "test"]
    assert [p[0] for p in probe["predictions"]] == [f"{r['path']}:{r['chain']}" for r in test_rows]
    assert (out / "finetune" / "scop2" / "random-encoder" / "p0_s1" / "predictions.tsv").exists()
    markdown = (out / "results.md").read_text()
    assert markdown.count("random weights") >= 4  # the caveat on every table
    assert (out / "effects.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "record.json").read_text())
    assert record["budget_name"] == "smoke" and record["runs"][0]["versions"]["torch"]
    assert len(record["units"]["finetune"]) == 2 * 2 * 2  # settings x pretrain seeds x split seeds

    # resumed: nothing is redone, the numbers are the same
    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was run again")

    monkeypatch.setattr(evidence, "protsteps", refuse)
    assert evidence.main(argv) == 0
    assert json.loads((out / "results.json").read_text()) == results
    assert len(json.loads((out / "record.json").read_text())["runs"]) == 2
