"""The evidence experiment of issue 15, from one command (design: docs/experiments.md).

    python experiments/evidence.py --out runs/evidence [--budget full|smoke] [--jobs N]
                                   [--sets ec scop2] [--settings NAME ...]

Steps, each unit of work written atomically under ``OUT`` and skipped when present, so an
interrupted run continues where it stopped:

1. ``pool/``: the pretraining pool and ``excluded.tsv`` (each file left out, rule, reason);
2. ``data/<set>/``: the usable labelled chains (rare EC classes merged), ``skipped.tsv``;
   ``splits/<set>/split<S>.tsv``: one manifest per split seed, split by sequence cluster;
3. ``teacher/esm2-random.pt``: the random-weight ESM-2 teacher (fair-esm's format);
4. ``pretrain/<setting>/p<P>/``: one ``protsteps pretrain`` run per setting and seed;
5. ``probe/<set>/<setting>/p<P>_s<S>.json``: frozen mean embeddings + the linear probe, with
   per-chain predictions; ``finetune/<set>/<setting>/p<P>_s<S>/``: ``protsteps finetune
   --mode full`` runs (their ``predictions.tsv`` holds the per-chain predictions);
6. ``results.json``, ``results.md``, ``effects.png`` and ``record.json`` (versions, commit,
   budget, per-unit timings).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("PROTSTEPS_SHARED_DATA", ROOT.parent / "shared" / "data"))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import evidence_stats  # noqa: E402

#: set -> (label file, label column)
SETS = {
    "ec": ("enzyme_class_chains.tsv", "ec_class"),
    "scop2": ("scop2_class_chains.tsv", "scop2_class"),
}
#: EC classes with fewer than 10 chains, merged into one (design: "Rare EC classes")
MERGED_EC = {"4": "4-6", "5": "4-6", "6": "4-6"}
SPLIT_SHARES = "0.6,0.2,0.2"
TEACHER_CAVEAT = (
    "The ESM-2 teacher has random weights: the *-esm rows and comparisons C, D, E test the "
    "machinery, not the method's claim."
)

#: encoder settings: the pretraining arguments (None: no pretraining)
PRETRAINED = {
    "pretrained-no-teacher": ["--teacher", "none"],
    "pretrained-joint-esm": ["--teacher", "esm", "--scheme", "joint"],
    "pretrained-bilevel-esm": ["--teacher", "esm", "--scheme", "pseudo_bilevel"],
    "pretrained-bilevel-esm-paper": ["--preset", "paper", "--teacher", "esm"],
}
SETTINGS = ["majority", "raw-inputs", "random-encoder", *PRETRAINED]
#: settings that are fine-tuned in full too
FINETUNED = ["random-encoder", *PRETRAINED]

#: (name, minuend, subtrahend) of the design's comparisons
COMPARISONS = [
    ("A", "pretrained-no-teacher", "random-encoder"),
    ("B", "pretrained-no-teacher", "raw-inputs"),
    ("C", "pretrained-joint-esm", "pretrained-no-teacher"),
    ("D", "pretrained-bilevel-esm", "pretrained-joint-esm"),
    ("E", "pretrained-bilevel-esm-paper", "pretrained-bilevel-esm"),
]


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a run spends: seeds are the design's, epochs and sizes what fits."""

    pretrain_seeds: tuple[int, ...]
    split_seeds: tuple[int, ...]
    pretrain_epochs: dict[str, int]
    finetune_epochs: int
    #: extra pretrain/finetune --set options (smaller encoders for the smoke run)
    sets: tuple[str, ...] = ()
    #: ESM-2 architecture of the random teacher: layers, width, heads
    teacher: tuple[int, int, int] = (6, 320, 20)
    #: keep every n-th pool file (1: all)
    pool_stride: int = 1
    #: keep this many clusters per class of each labelled set (0: all)
    clusters_per_class: int = 0


BUDGETS = {
    "full": Budget(
        pretrain_seeds=(0, 1, 2),
        split_seeds=(0, 1, 2, 3, 4),
        # the same epochs for the three settings compared by C and D; the paper preset
        # (batch size 1, second order) gets 1 of its 5 (design: "Budget")
        pretrain_epochs={
            "pretrained-no-teacher": 5,
            "pretrained-joint-esm": 5,
            "pretrained-bilevel-esm": 5,
            "pretrained-bilevel-esm-paper": 1,
        },
        finetune_epochs=20,
    ),
    "smoke": Budget(
        pretrain_seeds=(0, 1),
        split_seeds=(0, 1),
        pretrain_epochs=dict.fromkeys(PRETRAINED, 1),
        finetune_epochs=2,
        sets=("encoder.hidden_dim=16", "tasks.distance.num_pairs=32"),
        teacher=(1, 16, 2),
        pool_stride=60,
        clusters_per_class=3,
    ),
}


# ---------------------------------------------------------------------------- small helpers


def write_json(path: Path, data: Any) -> None:
    from protsteps.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=float) + "\n")


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from protsteps.files import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def protsteps(command: list[str], log: Path) -> float:
    """Run one ``protsteps`` command in this process (as typed on a shell, logged)."""
    from protsteps.cli import main

    line = shlex.join(["protsteps", *command])
    with open(log, "a") as fh:
        fh.write(line + "\n")
    started = time.perf_counter()
    code = main(command)
    if code != 0:
        raise RuntimeError(f"command failed with status {code}: {line}")
    return time.perf_counter() - started


def spec(row: dict[str, str]) -> str:
    return f"{row['path']}:{row['chain']}"


# ---------------------------------------------------------------------------- 1. the pool


def build_pool(out: Path, budget: Budget, jobs: int) -> None:
    import evidence_pool

    from protsteps.structure import is_structure_path

    if (out / "pool" / "pool.json").exists():
        return
    started = time.perf_counter()
    labels = SHARED / "labels"
    labelled = evidence_pool.read_labelled(
        [
            (labels / "enzyme_class_chains.tsv", "superfamily"),
            (labels / "scop2_class_chains.tsv", "scop2_superfamily"),
        ]
    )
    files = sorted(p for p in (SHARED / "structures").rglob("*") if p.is_file() and is_structure_path(p))
    files = files[:: budget.pool_stride]
    pool = evidence_pool.build_pool(files, labelled, labels / "scop2", workers=jobs)
    write_tsv(
        out / "pool" / "excluded.tsv",
        ["path", "rule", "reason"],
        [(str(p), r, why) for p, r, why in pool.excluded],
    )
    from protsteps.files import atomic_write_text

    atomic_write_text(out / "pool" / "pretrain_inputs.txt", "".join(f"{p.resolve()}\n" for p in pool.keep))
    rules: dict[str, int] = {}
    for _, rule, _ in pool.excluded:
        rules[rule] = rules.get(rule, 0) + 1
    write_json(
        out / "pool" / "pool.json",
        {
            "files": len(files),
            "kept": len(pool.keep),
            "excluded": rules,
            "seconds": time.perf_counter() - started,
        },
    )


# ---------------------------------------------------------------------------- 2. data and splits


def prepare_data(out: Path, name: str, budget: Budget) -> None:
    """Usable rows of one labelled set (featurized once), then one split manifest per seed."""
    from protsteps.downstream._labels import stratified_split
    from protsteps.featurize import featurize_many

    folder = out / "data" / name
    if not (folder / "chains.tsv").exists():
        file, column = SETS[name]
        rows = read_tsv(SHARED / "labels" / file)
        for row in rows:
            row["path"] = str((SHARED / "labels" / row["path"]).resolve())
            row["label"] = MERGED_EC.get(row[column], row[column]) if name == "ec" else row[column]
        if budget.clusters_per_class:
            rows = _first_clusters(rows, budget.clusters_per_class)
        report = featurize_many([spec(r) for r in rows], "residue_graph", {}, cache_dir=str(out / "cache"))
        ok = {str(e["source"]) for e in report.ok}
        errors = {str(f["source"]): str(f["error"]) for f in report.failed}
        usable = [r for r in rows if spec(r) in ok]
        skipped = [
            (spec(r), errors.get(spec(r), "no protein chain found")) for r in rows if spec(r) not in ok
        ]
        write_tsv(folder / "skipped.tsv", ["spec", "reason"], skipped)
        header = ["path", "chain", "label", "group", "pdb_chain"]
        write_tsv(
            folder / "chains.tsv",
            header,
            [[r["path"], r["chain"], r["label"], r["sequence_cluster"], r["pdb_chain"]] for r in usable],
        )
    chains = read_tsv(folder / "chains.tsv")
    shares = tuple(float(x) for x in SPLIT_SHARES.split(","))
    for seed in budget.split_seeds:
        target = out / "splits" / name / f"split{seed}.tsv"
        if target.exists():
            continue
        splits = stratified_split([r["label"] for r in chains], shares, seed, [r["group"] for r in chains])  # type: ignore[arg-type]
        write_tsv(
            target,
            ["path", "chain", "label", "split", "group", "pdb_chain"],
            [
                [r["path"], r["chain"], r["label"], s, r["group"], r["pdb_chain"]]
                for r, s in zip(chains, splits, strict=True)
            ],
        )


def _first_clusters(rows: list[dict[str, str]], per_class: int) -> list[dict[str, str]]:
    """The rows of the first ``per_class`` clusters (in id order) of each class."""
    chosen: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["sequence_cluster"]):
        clusters = chosen.setdefault(row["label"], [])
        if row["sequence_cluster"] not in clusters and len(clusters) < per_class:
            clusters.append(row["sequence_cluster"])
    keep = {c for clusters in chosen.values() for c in clusters}
    return [r for r in rows if r["sequence_cluster"] in keep]


# ---------------------------------------------------------------------------- 3-4. teacher, pretraining


def teacher_file(out: Path, budget: Budget) -> Path:
    from protsteps_esm.testing import write_esm2_checkpoint

    path = out / "teacher" / "esm2-random.pt"
    if not path.exists():
        layers, width, heads = budget.teacher
        path.parent.mkdir(parents=True, exist_ok=True)
        write_esm2_checkpoint(path, num_layers=layers, embed_dim=width, attention_heads=heads, seed=0)
    return path


def pretrain_unit(out: str, setting: str, seed: int, budget: Budget) -> dict[str, Any]:
    """One pretraining run (resumed when a checkpoint exists); its record."""
    from protsteps.training import load_checkpoint

    root = Path(out)
    run = root / "pretrain" / setting / f"p{seed}"
    done = run / "evidence-done.json"
    if done.exists():
        return json.loads(done.read_text())
    epochs = budget.pretrain_epochs[setting]
    log = root / "commands.sh"
    last = run / "checkpoints" / "last.pt"
    if last.exists():
        seconds = protsteps(
            ["pretrain", "--resume", str(run), "--epochs", str(epochs), "--threads", "1", "-q"], log
        )
    else:
        if run.exists():  # a run killed before its first checkpoint: start it again
            shutil.rmtree(run)
        command = ["pretrain", str(root / "pool" / "pretrain_inputs.txt"), "--out", str(run)]
        command += [*PRETRAINED[setting], "--epochs", str(epochs), "--seed", str(seed)]
        command += ["--cache-dir", str(root / "cache"), "--threads", "1", "-q"]
        if "--teacher" in PRETRAINED[setting] and "esm" in PRETRAINED[setting]:
            weights = root / "teacher" / "esm2-random.pt"
            command += ["--set", f"teacher.weights={weights}", "--set", "teacher.download=false"]
            # the frozen trunk's output, computed once per sequence for every run that follows
            command += ["--set", f"teacher.cache_dir={root / 'teacher' / 'trunk-cache'}"]
        if setting != "pretrained-bilevel-esm-paper":
            command += [x for s in budget.sets for x in ("--set", s)]
        seconds = protsteps(command, log)
    if load_checkpoint(last)["epoch"] < epochs:
        raise RuntimeError(f"{run} stopped before epoch {epochs}; run the experiment again to resume it")
    record = {"setting": setting, "seed": seed, "epochs": epochs, "seconds": seconds}
    write_json(done, record)
    return record


# ---------------------------------------------------------------------------- 5. probes and fine-tuning


def features(out: Path, setting: str, seed: int, name: str, budget: Budget) -> tuple[np.ndarray, list[str]]:
    """``[N, d]`` features of the set's chains under ``setting`` (cached as .npz), and the
    chain specs in row order."""
    chains = read_tsv(out / "data" / name / "chains.tsv")
    specs = [spec(r) for r in chains]
    path = out / "features" / setting / f"p{seed}" / f"{name}.npz"
    if not path.exists():
        if setting == "raw-inputs":
            values = raw_inputs(specs, out / "cache")
        else:
            values = encoder_features(out, setting, seed, specs, budget)
        buffer = io.BytesIO()
        np.savez(buffer, features=values, spec=np.asarray(specs, dtype=str))
        from protsteps.files import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    with np.load(path) as data:
        if list(data["spec"]) != specs:
            raise RuntimeError(f"{path} was made for other chains; remove it and run again")
        return data["features"], specs


def raw_inputs(specs: list[str], cache: Path) -> np.ndarray:
    """The no-teacher encoder's input features, mean-pooled: one-hot residue type (21) and
    the periodic encoding of phi and psi (2 x (2 + 16))."""
    import torch

    from protsteps.data import GraphDataset
    from protsteps.featurize import featurize_many
    from protsteps.graph import ALPHABET
    from protsteps_gnn.features import angle_encoding

    report = featurize_many(specs, "residue_graph", {}, cache_dir=str(cache))
    entries = {str(e["source"]): e for e in report.ok}
    dataset = GraphDataset([entries[s] for s in specs], str(cache))
    rows = []
    for i in range(len(specs)):
        graph = dataset[i]
        one_hot = torch.nn.functional.one_hot(graph.residue_type, len(ALPHABET)).double()
        angles = angle_encoding(graph.dihedrals, graph.dihedral_mask, 16, "phi_psi").double()
        rows.append(torch.cat([one_hot, angles], dim=1).mean(dim=0).numpy())
    return np.stack(rows)


def encoder_features(out: Path, setting: str, seed: int, specs: list[str], budget: Budget) -> np.ndarray:
    """Mean embeddings of a pretrained encoder, or of a random one seeded with ``seed``."""
    import torch

    from protsteps.downstream import embed
    from protsteps.downstream._model import scratch_backbone
    from protsteps.registry import default_catalog
    from protsteps.runconfig import RunConfig

    if setting == "random-encoder":
        raw: dict[str, Any] = {"teacher": {"name": "none"}}
        for item in budget.sets:
            key, value = item.split("=", 1)
            section, _, field = key.partition(".")
            if section == "encoder":
                raw.setdefault("encoder", {"name": "gin"})[field] = int(value)
        catalog = default_catalog()
        torch.manual_seed(seed)
        source: Any = scratch_backbone(RunConfig.from_dict(raw, catalog), catalog)
    else:
        source = out / "pretrain" / setting / f"p{seed}"
    result = embed(specs, source, cache_dir=str(out / "cache"), device="cpu")
    position = {
        (Path(s).resolve().as_posix(), c): i
        for i, (s, c) in enumerate(zip(result.source, result.chain, strict=True))
    }
    order = []
    for item in specs:
        path, _, chain = item.rpartition(":")
        key = (Path(path).resolve().as_posix(), chain)
        if key not in position:
            raise RuntimeError(f"{setting} p{seed}: {item} was not embedded ({result.failed[:1]})")
        order.append(position[key])
    return result.embeddings[order].astype(np.float64)


def probe_unit(out: Path, name: str, setting: str, pseed: int, sseed: int, budget: Budget) -> None:
    """The probe (or the majority class) on one split; per-chain predictions kept."""
    import evidence_probe

    from protsteps.downstream import accuracy, macro_f1

    target = out / "probe" / name / setting / f"p{pseed}_s{sseed}.json"
    if target.exists():
        return
    started = time.perf_counter()
    rows = read_tsv(out / "splits" / name / f"split{sseed}.tsv")
    classes = sorted({r["label"] for r in rows})
    labels = np.asarray([classes.index(r["label"]) for r in rows])
    splits = [r["split"] for r in rows]
    test = [i for i, s in enumerate(splits) if s == "test"]
    extra: dict[str, Any] = {}
    if setting == "majority":
        train = [labels[i] for i, s in enumerate(splits) if s == "train"]
        guess = max(sorted(set(train)), key=train.count)
        predicted = np.full(len(test), guess)
    else:
        values, specs = features(out, setting, pseed, name, budget)
        if specs != [spec(r) for r in rows]:
            raise RuntimeError(
                f"{name} split {sseed}: the split file's chains differ from data/{name}/chains.tsv"
            )
        result = evidence_probe.probe(values, labels, splits, len(classes))
        predicted = result.test_predicted
        extra = {
            "l2": result.l2,
            "valid_macro_f1_by_l2": {str(k): v for k, v in result.valid_macro_f1.items()},
        }
    truth = labels[test]
    write_json(
        target,
        {
            "set": name,
            "setting": setting,
            "mode": "probe",
            "pretrain_seed": pseed,
            "split_seed": sseed,
            "classes": classes,
            "test_macro_f1": macro_f1(truth, predicted, len(classes)),
            "test_accuracy": accuracy(truth, predicted),
            **extra,
            "predictions": [
                [spec(rows[i]), classes[int(t)], classes[int(p)]]
                for i, t, p in zip(test, truth, predicted, strict=True)
            ],
            "seconds": time.perf_counter() - started,
        },
    )


def finetune_unit(
    out: str, name: str, setting: str, pseed: int, sseed: int, budget: Budget
) -> dict[str, Any]:
    """One ``protsteps finetune --mode full`` run on a split manifest."""
    root = Path(out)
    run = root / "finetune" / name / setting / f"p{pseed}_s{sseed}"
    if (run / "metrics.json").exists():
        return {"skipped": True}
    if run.exists():  # killed mid-run: its folder is incomplete
        shutil.rmtree(run)
    if setting == "random-encoder":
        source = [
            "--from",
            "none",
            "--teacher",
            "none",
            *[x for s in budget.sets if s.startswith("encoder.") for x in ("--set", s)],
        ]
    else:
        source = ["--from", str(root / "pretrain" / setting / f"p{pseed}")]
    command = ["finetune", str(root / "splits" / name / f"split{sseed}.tsv"), *source, "--out", str(run)]
    command += ["--mode", "full", "--label-column", "label", "--group-column", "group", "--seed", str(pseed)]
    command += ["--epochs", str(budget.finetune_epochs), "--cache-dir", str(root / "cache"), "--threads", "1"]
    command += ["--callback", "csv", "-q"]
    return {"seconds": protsteps(command, root / "commands.sh")}


# ---------------------------------------------------------------------------- 6. results


def cell_values(
    out: Path, name: str, setting: str, mode: str, budget: Budget, metric: str
) -> np.ndarray | None:
    """``[P, S]`` test values of one setting (None when a unit is missing)."""
    values = np.full((len(budget.pretrain_seeds), len(budget.split_seeds)), np.nan)
    for i, p in enumerate(budget.pretrain_seeds):
        for j, s in enumerate(budget.split_seeds):
            if mode == "probe":
                pseed = 0 if setting in ("majority", "raw-inputs") else p
                path = out / "probe" / name / setting / f"p{pseed}_s{s}.json"
                if not path.exists():
                    return None
                value = json.loads(path.read_text())[f"test_{metric}"]
            else:
                path = out / "finetune" / name / setting / f"p{p}_s{s}" / "metrics.json"
                if not path.exists():
                    return None
                value = json.loads(path.read_text())["test"][metric]
            values[i, j] = np.nan if value is None else value
    return values


def summarise(out: Path, budget: Budget, sets: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"caveat": TEACHER_CAVEAT, "sets": {}, "families": {}}
    primary: dict[str, np.ndarray] = {}
    secondary: dict[str, np.ndarray] = {}
    for name in sets:
        table: dict[str, Any] = {}
        cells: dict[tuple[str, str], np.ndarray] = {}
        for setting in SETTINGS:
            for mode in ("probe", "full"):
                if mode == "full" and setting not in FINETUNED:
                    continue
                f1 = cell_values(out, name, setting, mode, budget, "macro_f1")
                if f1 is None:
                    continue
                acc = cell_values(out, name, setting, mode, budget, "accuracy")
                cells[(setting, mode)] = f1
                table[f"{setting}/{mode}"] = {
                    "macro_f1": evidence_stats.summarise(f1).as_dict(),
                    "accuracy": float(np.nanmean(acc)) if acc is not None else None,
                    "cells": f1.tolist(),
                }
        results["sets"][name] = table
        for label, minuend, subtrahend in COMPARISONS:
            for mode in ("probe", "full"):
                a = cells.get((minuend, mode))
                # raw inputs have no encoder to fine-tune: under full fine-tuning they enter with their probe
                b = cells.get((subtrahend, "probe" if subtrahend == "raw-inputs" else mode))
                if a is None or b is None:
                    continue
                family = primary if (mode == "probe" and label != "E") else secondary
                family[f"{name}/{label}/{mode}"] = a - b
    results["families"]["primary"] = evidence_stats.compare_family(primary) if primary else {}
    results["families"]["secondary"] = evidence_stats.compare_family(secondary) if secondary else {}
    return results


def markdown(results: dict[str, Any], budget: Budget) -> str:
    lines = [f"_{results['caveat']}_", ""]
    lines.append(
        f"Cells: {len(budget.pretrain_seeds)} pretraining seeds x {len(budget.split_seeds)} split seeds; "
        "mean test macro-F1 with its 95% hierarchical bootstrap interval."
    )
    lines.append("")
    for name, table in results["sets"].items():
        lines += [f"### {name}", "", f"_{results['caveat']}_", ""]
        lines += [
            "| setting | mode | test macro-F1 | 95% interval | test accuracy |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, row in table.items():
            setting, mode = key.split("/")
            f1 = row["macro_f1"]
            accuracy = "" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
            lines.append(
                f"| {setting} | {mode} | {f1['mean']:.3f} | [{f1['low']:.3f}, {f1['high']:.3f}] | {accuracy} |"
            )
        lines.append("")
    names = {label: f"{a} - {b}" for label, a, b in COMPARISONS}
    for family, rows in results["families"].items():
        lines += [f"### {family} comparisons (Holm over {len(rows)})", "", f"_{results['caveat']}_", ""]
        lines += [
            "| set | comparison | mode | difference | 95% interval | Holm p | holds |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key, r in rows.items():
            name, label, mode = key.split("/")
            lines.append(
                f"| {name} | {label}: {names[label]} | {mode} | {r['mean']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | "
                f"{r['p_holm']:.3f} | {'yes' if r['holds'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def figure(results: dict[str, Any], path: Path) -> None:
    """Each comparison's effect with its interval, one row each (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from protsteps.files import atomic_write_bytes

    short = {label: f"{a} - {b}".replace("pretrained-", "") for label, a, b in COMPARISONS}
    rows = []
    for family, items in results["families"].items():
        for key, r in items.items():
            name, label, mode = key.split("/")
            rows.append((f"{name} {label}: {short[label]} ({mode}, {family})", r))
    fig, ax = plt.subplots(figsize=(9, 0.35 * max(len(rows), 1) + 1.8))
    for y, (_, r) in enumerate(rows):
        colour = "tab:blue" if r["holds"] else "tab:gray"
        ax.errorbar(
            r["mean"],
            y,
            xerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
            fmt="o",
            color=colour,
            capsize=3,
        )
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(
        "paired difference in test macro-F1, mean over (pretraining seed, split seed) cells\n"
        "(95% hierarchical bootstrap interval; blue: holds after Holm, grey: does not)"
    )
    ax.set_title("Random-weight ESM-2 teacher: C, D, E test the machinery only", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def environment() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("protsteps", "torch", "numpy", "scipy", "fair-esm", "biopython", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "core", "plugins", "experiments")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": versions,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def unit_timings(out: Path) -> dict[str, Any]:
    """Seconds of every unit done so far, grouped as the budget estimate needs them."""
    timings: dict[str, Any] = {"pretrain": {}, "probe": {}, "finetune": {}}
    for done in sorted(out.glob("pretrain/*/p*/evidence-done.json")):
        record = json.loads(done.read_text())
        timings["pretrain"][f"{record['setting']}/p{record['seed']}"] = record["seconds"]
    for path in sorted(out.glob("probe/*/*/*.json")):
        timings["probe"][str(path.relative_to(out / "probe"))] = json.loads(path.read_text())["seconds"]
    for path in sorted(out.glob("finetune/*/*/*/metrics.json")):
        timings["finetune"][str(path.parent.relative_to(out / "finetune"))] = json.loads(path.read_text())[
            "seconds"
        ]["total"]
    pool = out / "pool" / "pool.json"
    timings["pool"] = json.loads(pool.read_text())["seconds"] if pool.exists() else None
    return timings


# ---------------------------------------------------------------------------- the command


def run_parallel(jobs: int, function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> None:
    if jobs <= 1 or len(calls) <= 1:
        for call in calls:
            function(*call)
        return
    import multiprocessing

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as executor:
        for future in [executor.submit(function, *call) for call in calls]:
            future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of every unit and the results")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--jobs", type=int, default=1, help="units run at once (one torch thread each)")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=SETTINGS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    budget = BUDGETS[args.budget]
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {"runs": []}
    if record.get("budget_name", args.budget) != args.budget:
        raise SystemExit(
            f"{out} holds a '{record['budget_name']}' run; use another --out for --budget {args.budget}"
        )
    started = time.perf_counter()
    env = environment()
    stages: dict[str, float] = {}

    def stage(name: str, work: Callable[[], None]) -> None:
        clock = time.perf_counter()
        work()
        stages[name] = time.perf_counter() - clock
        print(f"evidence: {name} done ({stages[name]:.0f} s)", flush=True)

    settings = [s for s in SETTINGS if s in args.settings]
    pretrained = [s for s in settings if s in PRETRAINED]
    stage("pool", lambda: build_pool(out, budget, args.jobs))
    stage("data", lambda: [prepare_data(out, name, budget) for name in args.sets])
    stage("teacher", lambda: teacher_file(out, budget))
    stage(
        "pretrain",
        lambda: run_parallel(
            args.jobs,
            pretrain_unit,
            [(str(out), s, p, budget) for s in pretrained for p in budget.pretrain_seeds],
        ),
    )

    def probes() -> None:
        for name in args.sets:
            for setting in settings:
                seeds = (0,) if setting in ("majority", "raw-inputs") else budget.pretrain_seeds
                for p in seeds:
                    for s in budget.split_seeds:
                        probe_unit(out, name, setting, p, s, budget)

    stage("probe", probes)
    calls = [
        (str(out), name, setting, p, s, budget)
        for name in args.sets
        for setting in settings
        if setting in FINETUNED
        for p in budget.pretrain_seeds
        for s in budget.split_seeds
    ]
    stage("finetune", lambda: run_parallel(args.jobs, finetune_unit, calls))

    results = summarise(out, budget, args.sets)
    write_json(out / "results.json", results)
    from protsteps.files import atomic_write_text

    atomic_write_text(out / "results.md", markdown(results, budget))
    figure(results, out / "effects.png")
    record["budget_name"] = args.budget
    record["budget"] = dataclasses.asdict(budget)
    record["runs"].append(
        {
            **env,
            "argv": sys.argv[1:] if argv is None else argv,
            "stages": stages,
            "seconds": time.perf_counter() - started,
        }
    )
    record["units"] = unit_timings(out)
    write_json(record_path, record)
    print(f"evidence: results in {out / 'results.md'}, {out / 'effects.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
