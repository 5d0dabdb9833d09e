"""Fine-tuning a classifier on labelled structures: the loop behind ``protsteps finetune``.

Protocol (the paper scored its test set after every epoch and had no validation set; we do
not):

1. every labelled chain is featurized with the backbone's featurizer through the cache;
   rows whose structure is missing or fails are written to ``skipped.tsv`` with the reason;
2. rows without a split get a seeded stratified one (default 80/10/10; rows of one group stay
   together); when the label file gives splits but no validation (or test) rows, that part is
   drawn from the training rows the same way;
   a protein on two sides of the split (the same structure, PDB chain, sequence or group) and
   a test set of fewer than 10 proteins are warned about, on stderr and in the notes;
3. a head (``[finetune] head``, a registered head; the default ``mlp`` is
   :class:`~protsteps.downstream.ClassificationHead`) is trained on the pooled protein
   embedding: ``probe`` keeps the encoder frozen (embeddings are computed once), ``full``
   trains the encoder too; the teacher is always frozen;
4. after each epoch the validation set is scored; the epoch with the best validation
   macro-F1 (single-label; ties: lower validation loss, then the earlier epoch) or Fmax
   (multi-label), or of ``[finetune] metric``, is kept; every registered metric that
   scores the task is reported, and the test set is scored once, with those weights.

The run folder::

    RUNDIR/
      finetune.toml          the resolved settings (data, backbone, training)
      metrics.json           valid and test metrics at the best epoch, history, counts
      history.jsonl          one line per epoch, written as training goes
      learning_curve.png     train/valid loss and the validation metric per epoch
      confusion_matrix.png   valid and test confusion matrices (single-label)
      predictions.tsv        each valid/test protein: true and predicted labels, score
      splits.tsv             every usable row with its split
      skipped.tsv            every labelled row that could not be used, with the reason
      featurize-report.json  the featurizer's report (ok chains, failed files)
      head.pt                the head's weights, classes and shape
      encoder.pt             the encoder's weights at the best epoch (an encoder.pt that
                             ``protsteps embed --from RUNDIR`` reads)
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import _toml
from .._text import count
from .._version import __version__
from ..callbacks import TrainingCallbacks
from ..config import to_dict
from ..data import GraphDataset, LengthBatchSampler
from ..errors import CompositionError, ProtstepsError, RunFailure, build_in_plugin
from ..extensions import CallbackContext, ExtensionEntry, HeadContext, RunStart, check_metric
from ..featurize import featurize_many
from ..files import atomic_torch_save, atomic_write_text, run_folder_lock, strict_json_line
from ..optim import make_optimizer
from ..precision import autocast, check_precision, grad_scaler
from ..progress import FileProgress, ProgressDisplay
from ..registry import Catalog, default_catalog
from ..runconfig import RunConfig, load_run_config
from ..threads import ThreadChoice, using_threads
from ..training import Distributed, pick_device
from . import _metrics as M
from ._config import FinetuneConfig
from ._labels import (
    LabelledChain,
    LabelledSet,
    Skipped,
    Split,
    merge_duplicate_rows,
    rarest_label,
    stratified_split,
)
from ._leakage import leakage_notes, small_test_note
from ._model import Backbone, encode, forward, load_backbone, refuse_settings_for_built, scratch_backbone
from ._plots import plot_confusion, plot_learning_curve

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "HEAD_FORMAT"]

HEAD_FORMAT = 1
#: below this many residues in all, the graphs are held in memory instead of re-read
_PRELOAD_RESIDUES = 1_000_000


@dataclasses.dataclass
class FinetuneResult:
    """What a finetune run gave: its folder, the metrics document and the chosen epoch."""

    run_dir: Path
    metrics: dict[str, Any]

    @property
    def best_epoch(self) -> int:
        return int(self.metrics["best_epoch"])

    @property
    def test(self) -> dict[str, Any]:
        return dict(self.metrics["test"])

    @property
    def valid(self) -> dict[str, Any]:
        return dict(self.metrics["valid"])


# ---------------------------------------------------------------------------- display


def epoch_line(record: Mapping[str, Any], metric: str, best: int) -> str:
    return (
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}  valid loss "
        f"{record['valid_loss']:.4f}  valid {metric} {record[f'valid_{metric}']:.4f}  (best epoch {best})"
    )


# ---------------------------------------------------------------------------- data


@dataclasses.dataclass
class Example:
    """A usable labelled chain: its row, its featurized entry and its split."""

    row: LabelledChain
    entry: dict[str, Any]
    split: Split


def _featurize(
    data: LabelledSet, backbone: Backbone, config: FinetuneConfig, display: ProgressDisplay | None = None
) -> tuple[list[tuple[LabelledChain, dict[str, Any]]], list[Skipped], Any]:
    """Featurize every row's structure; rows that give no single chain become skipped."""
    specs = list(dict.fromkeys(r.spec for r in data.rows))
    watch = FileProgress(display.message if display is not None else lambda _: None)
    report = featurize_many(
        specs,
        backbone.featurizer["name"],
        backbone.featurizer.get("config", {}),
        cache_dir=config.cache_dir or None,
        workers=max(1, config.workers),
        on_total=watch.total,
        on_result=watch.result,
    )
    ok: dict[str, list[dict[str, Any]]] = {}
    for entry in report.ok:
        ok.setdefault(str(entry["source"]), []).append(entry)
    errors: dict[str, list[str]] = {}
    for failure in report.failed:
        errors.setdefault(str(failure["source"]), []).append(str(failure["error"]))
    usable: list[tuple[LabelledChain, dict[str, Any]]] = []
    skipped: list[Skipped] = []
    for row in data.rows:
        entries = ok.get(row.spec, [])
        label = ";".join(row.labels)
        if not entries:
            reason = "; ".join(errors.get(row.spec, [])) or f"{row.spec}: no protein chain found"
            skipped.append(Skipped(row.origin, row.path, row.chain or "", label, reason))
        elif row.chain is None and len(entries) > 1:
            chains = ", ".join(str(e["chain"]) for e in entries)
            skipped.append(
                Skipped(
                    row.origin,
                    row.path,
                    "",
                    label,
                    f"{row.path} holds {len(entries)} chains ({chains}); name one in the chain column",
                )
            )
        else:
            usable.append((row, entries[0]))
    return usable, skipped, report


def _fill_split(
    strata: list[str], groups: list[str | None], current: list[Split], part: Split, share: float, seed: int
) -> list[Split]:
    """Move a ``share`` of the training rows (stratified, seeded) to ``part``."""
    train = [i for i, s in enumerate(current) if s == "train"]
    fractions = (1.0 - share, share, 0.0)
    drawn = stratified_split([strata[i] for i in train], fractions, seed, [groups[i] for i in train])
    out = list(current)
    for i, split in zip(train, drawn, strict=True):
        if split == "valid":
            out[i] = part
    return out


def class_coverage_notes(classes: Sequence[str], labels: Mapping[str, Sequence[Sequence[str]]]) -> list[str]:
    """Notes on classes a split lacks: a class without training proteins cannot be learned,
    one without validation or test proteins is not scored there."""

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        return ", ".join(names[:10]) + more

    present = {part: {label for row in rows for label in row} for part, rows in labels.items()}
    notes = []
    missing = [c for c in classes if c not in present["train"]]
    if missing:
        notes.append(
            f"{len(missing)} {'class has' if len(missing) == 1 else 'classes have'} no training protein "
            f"and cannot be learned: {listed(missing)}"
        )
    for part in ("valid", "test"):
        missing = [c for c in classes if c not in present[part]]
        if missing:
            notes.append(
                f"{len(missing)} {'class has' if len(missing) == 1 else 'classes have'} no {part} protein "
                f"and {'is' if len(missing) == 1 else 'are'} not scored there: {listed(missing)}"
            )
    return notes


def assign_splits(
    rows: Sequence[LabelledChain], fractions: Sequence[float], seed: int, multi: bool
) -> tuple[list[Split], list[str]]:
    """The split of each row and notes on what was drawn (see the module docstring)."""
    strata = rarest_label(r.labels for r in rows) if multi else [r.labels[0] for r in rows]
    groups = [r.group for r in rows]
    given = [r.split for r in rows]
    notes: list[str] = []
    if not any(given):
        shares = (float(fractions[0]), float(fractions[1]), float(fractions[2]))
        notes.append(
            f"no split given: drew a stratified {'/'.join(f'{100 * f:g}' for f in shares)} split with seed {seed}"
            + (" (rows of one group kept together)" if any(groups) else "")
        )
        return stratified_split(strata, shares, seed, groups), notes
    if not all(given):
        missing = next(r.origin for r in rows if r.split is None)
        raise ProtstepsError(
            f"{missing}: this row has no split while others have one; give every row a split, or none"
        )
    splits: list[Split] = [s for s in given if s is not None]
    for part, share in (("valid", fractions[1]), ("test", fractions[2])):
        if part not in splits and share > 0:
            moved = share / (float(fractions[0]) + share)
            splits = _fill_split(strata, groups, splits, part, moved, seed)  # type: ignore[arg-type]
            notes.append(
                f"the label file gives no {part} rows: drew {splits.count(part)} from the training rows "  # type: ignore[arg-type]
                f"(stratified, seed {seed})"
            )
    return splits, notes


# ---------------------------------------------------------------------------- scoring


def _nan_to_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def metric_values(
    metrics: Sequence[ExtensionEntry], probabilities: np.ndarray, targets: np.ndarray
) -> dict[str, float | None]:
    """Each registered metric's value (``None`` when undefined); a metric that raises is an
    error naming it and its plugin."""
    values: dict[str, float | None] = {}
    for entry in metrics:
        try:
            values[entry.name] = _nan_to_none(float(entry.record.compute(probabilities, targets)))
        except Exception as exc:
            raise ProtstepsError(
                f"metric '{entry.name}' of plugin '{entry.plugin}' failed: {type(exc).__name__}: {exc}"
            ) from exc
    return values


def score_split(
    probabilities: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    multi: bool,
    loss: float,
    metrics: Sequence[ExtensionEntry] = (),
) -> dict[str, Any]:
    """The metrics of one split: ``probabilities: [P, C]``; ``targets: [P] int`` (single)
    or ``[P, C] bool`` (multi). ``metrics`` are the registered ones that score the task
    (:func:`task_metrics`); the per-class tables and the Fmax threshold come with them."""
    count = len(classes)
    values = metric_values(metrics, probabilities, targets)
    if multi:
        threshold = M.fmax(probabilities, targets)[1]
        return {
            "proteins": len(probabilities),
            "loss": _nan_to_none(loss),
            **values,
            "fmax_threshold": _nan_to_none(threshold),
            "support": {c: int(n) for c, n in zip(classes, np.asarray(targets).sum(0), strict=True)},
        }
    predicted = probabilities.argmax(1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    f1 = M.f1_per_class(targets, predicted, count)
    matrix = M.confusion_matrix(targets, predicted, count)
    return {
        "proteins": len(probabilities),
        "loss": _nan_to_none(loss),
        **values,
        "support": {c: int(n) for c, n in zip(classes, M.support(targets, count), strict=True)},
        "f1_per_class": {c: _nan_to_none(float(v)) for c, v in zip(classes, f1, strict=True)},
        "confusion_matrix": {"classes": list(classes), "matrix": matrix.tolist()},
    }


# ---------------------------------------------------------------------------- the run


def prepare_out(out: Path) -> None:
    """Refuse a folder that already holds a finetune run; create it otherwise."""
    for name in ("metrics.json", "finetune.toml", "head.pt"):
        if (out / name).exists():
            raise ProtstepsError(f"{out} already holds a finetune run ({name}); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)


def _write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _origin_order(skipped: Skipped) -> tuple[str, int]:
    """Sort key of a row origin ``<file>:<line>`` (or an adapter's own origin)."""
    name, _, line = skipped.origin.rpartition(":")
    return (name, int(line)) if line.isdigit() else (skipped.origin, 0)


def _summarise_skipped(skipped: Sequence[Skipped], total: int, path: Path) -> str:
    first = "; ".join(f"{s.origin}: {s.reason}" for s in skipped[:3])
    return (
        f"{len(skipped)} of {count(total, 'labelled row')} cannot be used (first: {first}); "
        f"every one with its reason in {path}"
    )


def finetune(
    data: LabelledSet,
    pretrained: str | Path | Backbone | None,
    out: str | Path,
    config: FinetuneConfig | None = None,
    *,
    scratch: RunConfig | None = None,
    catalog: Catalog | None = None,
    show_progress: bool = True,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> FinetuneResult:
    """Train a classifier on ``data`` with the encoder of ``pretrained`` and write ``out``.

    Parameters
    ----------
    data:
        Labelled chains (:func:`read_manifest`, :func:`protfunct`, :func:`deeploc`).
    pretrained:
        A pretrain run folder or ``encoder.pt``; a :class:`Backbone`; or ``None`` for the
        from-scratch baseline: the architecture, featurizer and teacher of ``scratch`` (a run
        config; default: the default run config) with freshly initialised weights.
    out:
        The run folder to create (refused when it already holds a finetune run).
    config:
        :class:`FinetuneConfig` (default settings when ``None``).
    settings:
        With a pretrained encoder read from a file: the locations that file does not decide,
        per kind (``{"teacher": {"cache_dir": "/scratch/trunks"}}``; see
        :func:`protsteps.export.load_pretrained`).

    Returns
    -------
    :class:`FinetuneResult` with the ``metrics.json`` document.
    """
    config = config or FinetuneConfig()
    # the head and metric are looked up before any work: a wrong name leaves no folder
    check_names(catalog or default_catalog(), config, data)
    # one row per chain, before anything is written: a chain labelled twice differently, or
    # on two sides of the split, is refused; a repeat is merged with a warning
    data = merge_duplicate_rows(data)
    with run_folder_lock(Path(out), "finetune"), using_threads(config.threads) as threads:
        return _finetune(
            data,
            pretrained,
            out,
            config,
            scratch=scratch,
            catalog=catalog,
            show_progress=show_progress,
            threads=threads,
            settings=settings,
        )


def _finetune(
    data: LabelledSet,
    pretrained: str | Path | Backbone | None,
    out: str | Path,
    config: FinetuneConfig,
    *,
    scratch: RunConfig | None,
    catalog: Catalog | None,
    show_progress: bool,
    threads: ThreadChoice,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> FinetuneResult:
    """:func:`finetune` on ``threads`` torch threads."""
    started = time.perf_counter()
    catalog = catalog or default_catalog()
    out = Path(out)
    prepare_out(out)
    display = ProgressDisplay("finetune", show_progress)
    device = pick_device(config.device, Distributed(), where="--device")
    check_precision(config.precision, device, where="--precision")
    torch.manual_seed(config.seed)
    if isinstance(pretrained, Backbone):
        refuse_settings_for_built(settings)
        backbone = pretrained
    elif pretrained is None:
        refuse_settings_for_built(settings)
        backbone = scratch_backbone(scratch or load_run_config(None, catalog), catalog)
    else:
        backbone = load_backbone(pretrained, catalog, settings)
    head_entry = catalog.extensions.get("head", config.head)
    backbone.to(device)
    for note in backbone.notes:
        display.message(note)
    display.message(
        f"backbone {backbone.origin} | encoder {backbone.record['encoder']['name']} "
        f"(d = {backbone.encoder.out_dim}) | featurizer {backbone.featurizer['name']} | "
        f"teacher {backbone.teacher_description()} | mode {config.mode} | device {device} | "
        + (f"precision {config.precision} | " if config.precision != "32" else "")
        + threads.describe()
    )

    # -- data
    clock = time.perf_counter()
    usable, failed, report = _featurize(data, backbone, config, display)
    featurize_seconds = time.perf_counter() - clock
    report.write(out / "featurize-report.json")
    # in label-file order, whether a row failed while reading the labels or featurizing
    skipped = sorted([*data.skipped, *failed], key=_origin_order)
    _write_tsv(
        out / "skipped.tsv",
        ["origin", "path", "chain", "label", "reason"],
        [[s.origin, s.path, s.chain, s.label, s.reason] for s in skipped],
    )
    total_rows = len(data.rows) + len(data.skipped)
    if skipped:
        display.message(_summarise_skipped(skipped, total_rows, out / "skipped.tsv"))
    if not usable:
        raise ProtstepsError(
            f"none of the {total_rows} labelled rows of {data.source} can be used"
            + (f" (first: {skipped[0].origin}: {skipped[0].reason})" if skipped else "")
            + f"; see {out / 'skipped.tsv'}"
        )
    rows = [row for row, _ in usable]
    multi = config.task == "multi" or (config.task == "auto" and any(len(r.labels) > 1 for r in rows))
    if not multi:
        several = next((r for r in rows if len(r.labels) > 1), None)
        if several is not None:
            raise ProtstepsError(
                f"{several.origin}: {len(several.labels)} labels ({';'.join(several.labels)}) but task = single"
            )
    classes = sorted({label for r in rows for label in r.labels})
    if len(classes) < 2:
        raise ProtstepsError(f"{data.source}: a classifier needs at least 2 classes, found {classes}")
    class_index = {c: i for i, c in enumerate(classes)}
    split_seed = config.seed if config.split_seed is None else config.split_seed
    splits, split_notes = assign_splits(rows, config.split_fractions, split_seed, multi)
    examples = [Example(row, entry, split) for (row, entry), split in zip(usable, splits, strict=True)]
    for note in data.notes + split_notes:
        (display.warn if note.startswith("warning:") else display.message)(note)
    parts = {s: [i for i, e in enumerate(examples) if e.split == s] for s in ("train", "valid", "test")}
    for part, indices in parts.items():
        if not indices:
            raise ProtstepsError(
                f"no {part} proteins among the {len(examples)} usable rows; "
                "give more labelled structures or change the split shares"
            )
    _write_tsv(
        out / "splits.tsv",
        ["split", "origin", "path", "chain", "residues", data.label_column],
        [
            [e.split, e.row.origin, e.row.path, e.entry["chain"], e.entry["residues"], ";".join(e.row.labels)]
            for e in examples
        ],
    )
    coverage_notes = class_coverage_notes(
        classes, {p: [examples[i].row.labels for i in ix] for p, ix in parts.items()}
    )
    for note in coverage_notes:
        display.message(note)
    dataset = GraphDataset([e.entry for e in examples], report.cache_dir)
    graphs: Any = dataset
    if int(dataset.lengths.sum()) <= _PRELOAD_RESIDUES:
        graphs = [dataset[i] for i in range(len(dataset))]
    leak_notes = leakage_notes(
        [e.row for e in examples],
        [str(e.entry["chain"]) for e in examples],
        [graphs[i].sequence for i in range(len(examples))],
        [e.split for e in examples],
        group_column=data.settings.get("group_column"),
        pdb_chain_column=data.settings.get("pdb_chain_column"),
        columns=data.columns,
    ) + small_test_note(len(parts["test"]))
    for note in leak_notes:
        display.warn(note)
    display.message(
        f"{len(classes)} classes, {'multi' if multi else 'single'}-label | proteins: "
        f"{len(parts['train'])} train, {len(parts['valid'])} valid, {len(parts['test'])} test"
    )

    resolved = {
        "protsteps_version": __version__,
        "finetune": to_dict(config),
        "data": {
            **data.settings,
            "source": data.source,
            "label_column": data.label_column,
            "task": "multi" if multi else "single",
            "classes": classes,
        },
        "backbone": {
            "from": backbone.origin,
            **{k: backbone.record[k] for k in ("encoder", "featurizer", "teacher")},
        },
    }
    atomic_write_text(out / "finetune.toml", _toml.dumps(resolved))

    # -- targets
    if multi:
        targets_all: Tensor = torch.zeros(len(examples), len(classes))
        for i, e in enumerate(examples):
            for label in e.row.labels:
                targets_all[i, class_index[label]] = 1.0
    else:
        targets_all = torch.tensor([class_index[e.row.labels[0]] for e in examples], dtype=torch.long)

    torch.manual_seed(config.seed)  # the same head initialisation whatever the backbone
    head = build_head(
        head_entry,
        HeadContext(
            int(backbone.encoder.out_dim), len(classes), config.head_hidden, config.head_dropout, multi
        ),
    ).to(device)
    trainer = _Trainer(backbone, head, graphs, dataset.lengths, targets_all, multi, config, device)
    scored, selection = task_metrics(catalog, config, multi)
    metric = selection.name
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "key": None}
    (out / "history.jsonl").unlink(missing_ok=True)
    callbacks = TrainingCallbacks.build(
        catalog, config.callbacks, CallbackContext(run_dir=out, config=to_dict(config), resume=False)
    )
    callbacks.warn = display.warn
    display.start(config.epochs)
    clock = time.perf_counter()
    status = "failed"
    callbacks.start(RunStart(step=0, total_steps=config.epochs))
    try:
        for epoch in range(1, config.epochs + 1):
            train_loss = trainer.train_epoch(parts["train"], epoch)
            probabilities, valid_loss = trainer.predict(parts["valid"])
            valid = score_split(
                probabilities, trainer.targets_of(parts["valid"]), classes, multi, valid_loss, scored
            )
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                **{f"valid_{entry.name}": valid[entry.name] for entry in scored},
                "seconds": time.perf_counter() - clock,
            }
            value = record[f"valid_{metric}"]
            rank = math.inf if value is None else (-value if selection.record.higher_is_better else value)
            key = (rank, valid_loss, epoch)
            if best["key"] is None or key < best["key"]:
                best = {"epoch": epoch, "key": key, "state": trainer.snapshot()}
            history.append(record)
            with open(out / "history.jsonl", "a", encoding="utf-8") as fh:
                fh.write(strict_json_line(record) + "\n")
            callbacks.log({"step": epoch, **record})
            shown = {k: (math.nan if v is None else v) for k, v in record.items()}
            line = epoch_line(shown, metric, best["epoch"])
            display.update(epoch, line, f"{line}  ({epoch}/{config.epochs} epochs, ETA {display.eta(epoch)})")
        status = "completed"
    finally:
        display.close()
        callbacks.end(status)
    train_seconds = time.perf_counter() - clock

    # -- the chosen epoch, scored once on test
    trainer.restore(best["state"])
    results: dict[str, dict[str, Any]] = {}
    predictions: list[list[Any]] = []
    threshold = 0.5
    for part in ("valid", "test"):
        probabilities, loss = trainer.predict(parts[part])
        results[part] = score_split(
            probabilities, trainer.targets_of(parts[part]), classes, multi, loss, scored
        )
        if multi and part == "valid" and results[part]["fmax_threshold"] is not None:
            threshold = float(results[part]["fmax_threshold"])
        for position, i in enumerate(parts[part]):
            p = probabilities[position]
            if multi:
                chosen = [classes[c] for c in np.nonzero(p >= threshold)[0]]
                score = ";".join(f"{p[class_index[c]]:.4f}" for c in chosen)
            else:
                chosen = [classes[int(p.argmax())]]
                score = f"{float(p.max()):.4f}"
            e = examples[i]
            predictions.append(
                [
                    part,
                    e.row.origin,
                    e.row.path,
                    e.entry["chain"],
                    ";".join(e.row.labels),
                    ";".join(chosen),
                    score,
                ]
            )
    _write_tsv(
        out / "predictions.tsv",
        ["split", "origin", "path", "chain", "true", "predicted", "score"],
        predictions,
    )
    atomic_torch_save(
        {
            "format": HEAD_FORMAT,
            "protsteps_version": __version__,
            "task": "multi" if multi else "single",
            "classes": classes,
            "label_column": data.label_column,
            "threshold": threshold if multi else None,
            "head_name": config.head,
            "head": describe_head(head),
            "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        },
        out / "head.pt",
    )
    atomic_torch_save(backbone.export(), out / "encoder.pt")

    title = f"{Path(data.source).name} | {config.mode} | from {backbone.origin}"
    plot_learning_curve(history, metric, best["epoch"], out / "learning_curve.png", title)
    if not multi:
        matrices = {p: np.asarray(results[p]["confusion_matrix"]["matrix"]) for p in ("valid", "test")}
        plot_confusion(matrices, classes, out / "confusion_matrix.png", title)

    metrics = {
        "protsteps_version": __version__,
        "task": "multi" if multi else "single",
        "mode": config.mode,
        "from": backbone.origin,
        "seed": config.seed,
        "split_seed": split_seed,
        "label_column": data.label_column,
        "classes": classes,
        "selection": {
            "metric": f"valid {metric}",
            "higher_is_better": selection.record.higher_is_better,
            "ties": "lower valid loss, then the earlier epoch",
        },
        "best_epoch": best["epoch"],
        "valid": results["valid"],
        "test": results["test"],
        "counts": {
            "labelled_rows": total_rows,
            "skipped": len(skipped),
            "proteins": len(examples),
            "train": len(parts["train"]),
            "valid": len(parts["valid"]),
            "test": len(parts["test"]),
            "classes": len(classes),
        },
        "train_support": {
            c: int(sum(1 for i in parts["train"] if c in examples[i].row.labels)) for c in classes
        },
        "notes": data.notes + split_notes + coverage_notes + leak_notes + backbone.notes,
        "history": [json.loads(strict_json_line(h)) for h in history],
        "seconds": {
            "featurize": featurize_seconds,
            "train": train_seconds,
            "total": time.perf_counter() - started,
        },
        "device": str(device),
        "threads": {"count": threads.threads, "chosen": threads.reason},
        "config": resolved,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    display.message(_final_line(metrics, metric))
    return FinetuneResult(out, metrics)


def build_head(entry: ExtensionEntry, context: HeadContext) -> nn.Module:
    """The head registered as ``entry`` for ``context``; a plugin's failure is one line
    naming the head and its plugin."""
    head = build_in_plugin(f"head '{entry.name}'", entry.plugin, entry.record.factory, context)
    if not isinstance(head, nn.Module):
        raise CompositionError(
            f"head '{entry.name}' of plugin '{entry.plugin}' returned {type(head).__name__}, expected a torch.nn.Module"
        )
    return head


def describe_head(head: nn.Module) -> dict[str, Any]:
    """What ``head.pt`` records of a head's shape: its ``describe()``, when it has one."""
    describe = getattr(head, "describe", None)
    return dict(describe()) if callable(describe) else {}


def check_names(catalog: Catalog, config: FinetuneConfig, data: LabelledSet) -> None:
    """Refuse an unknown ``[finetune] head`` or ``metric``, or a metric of the other kind of
    task, before anything is featurized or written."""
    catalog.extensions.get("head", config.head)
    for name in config.callbacks:
        catalog.extensions.get("callback", name)
    if config.metric:
        task_metrics(catalog, config, config.task == "multi" or any(len(r.labels) > 1 for r in data.rows))


def task_metrics(
    catalog: Catalog, config: FinetuneConfig, multi: bool
) -> tuple[list[ExtensionEntry], ExtensionEntry]:
    """The registered metrics that score the task, and the one choosing the best epoch
    (``[finetune] metric``, else macro_f1 / fmax); refused when it does not score the task."""
    extensions = catalog.extensions
    name = config.metric or ("fmax" if multi else "macro_f1")
    chosen = extensions.get("metric", name)
    check_metric(extensions, name, multi)
    scored = [entry for entry in extensions.entries("metric") if entry.record.scores(multi)]
    return scored, chosen


def _final_line(metrics: Mapping[str, Any], metric: str) -> str:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    test, valid = metrics["test"], metrics["valid"]
    extra = (
        f", accuracy {fmt(test['accuracy'])}"
        if "accuracy" in test and metric != "accuracy"
        else (
            f", micro AUPR {fmt(test['micro_aupr'])}"
            if "micro_aupr" in test and metric != "micro_aupr"
            else ""
        )
    )
    return (
        f"best epoch {metrics['best_epoch']}: valid {metric} {fmt(valid[metric])} | "
        f"test {metric} {fmt(test[metric])}{extra} ({count(test['proteins'], 'protein')})"
    )


class _Trainer:
    """The head (and in full mode the encoder) with its optimiser, over one set of graphs."""

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        graphs: Any,
        lengths: np.ndarray,
        targets: Tensor,
        multi: bool,
        config: FinetuneConfig,
        device: torch.device,
    ) -> None:
        self.backbone, self.head, self.graphs, self.lengths = backbone, head, graphs, lengths
        self.targets, self.multi, self.config, self.device = targets, multi, config, device
        self.full = config.mode == "full"
        for p in backbone.encoder.parameters():
            p.requires_grad_(self.full)
        if backbone.teacher is not None:
            backbone.teacher.eval()
        groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": config.lr}]
        if self.full:
            encoder_lr = config.lr if config.encoder_lr is None else config.encoder_lr
            groups.append({"params": list(backbone.encoder.parameters()), "lr": encoder_lr})
        self.optimizer = make_optimizer(groups, config.lr, config.weight_decay)  # type: ignore[arg-type]
        self.scaler = grad_scaler(config.precision, device)
        self.embeddings: Tensor | None = None
        if not self.full:
            # the frozen encoder gives the same embedding every epoch: compute it once
            order = self._order(range(len(lengths)))
            self.embeddings, _ = encode(backbone, graphs, order, device)

    def _order(self, indices: Sequence[int] | range) -> list[list[int]]:
        indices = list(indices)
        sampler = LengthBatchSampler(
            self.lengths[indices],
            max_residues=self.config.max_residues,
            batch_size=self.config.batch_size if self.config.max_residues == 0 else 0,
            shuffle=False,
        )
        return [[indices[j] for j in batch] for batch in sampler.batches()]

    def targets_of(self, indices: Sequence[int]) -> np.ndarray:
        values = self.targets[list(indices)]
        return values.bool().numpy() if self.multi else values.numpy()

    def loss(self, logits: Tensor, indices: Sequence[int]) -> Tensor:
        target = self.targets[list(indices)].to(self.device)
        if self.multi:
            return nn.functional.binary_cross_entropy_with_logits(logits, target)
        return nn.functional.cross_entropy(logits, target)

    def _train_batches(self, indices: Sequence[int], epoch: int) -> list[list[int]]:
        if not self.full:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            shuffled = [indices[int(i)] for i in torch.randperm(len(indices), generator=generator)]
            size = self.config.batch_size
            return [shuffled[i : i + size] for i in range(0, len(shuffled), size)]
        sampler = LengthBatchSampler(
            self.lengths[list(indices)],
            max_residues=self.config.max_residues,
            batch_size=self.config.batch_size if self.config.max_residues == 0 else 0,
            shuffle=True,
            seed=self.config.seed,
        )
        sampler.set_epoch(epoch)
        return [[indices[j] for j in batch] for batch in sampler.batches()]

    def train_epoch(self, indices: Sequence[int], epoch: int) -> float:
        """One pass over ``indices``; the mean training loss (weighted by proteins)."""
        self.head.train()
        self.backbone.encoder.train(self.full)
        total, count = 0.0, 0
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        for batch_indices in self._train_batches(indices, epoch):
            with autocast(self.config.precision, self.device):
                if self.full:
                    batch = _collate(self.graphs, batch_indices).to(self.device)
                    embedding = forward(self.backbone, batch).graph
                else:
                    assert self.embeddings is not None
                    embedding = self.embeddings[batch_indices].to(self.device)
                loss = self.loss(self.head(embedding), batch_indices)
            if not torch.isfinite(loss):
                names = ", ".join(
                    f"{self.graphs[i].source}:{self.graphs[i].chain_id}" for i in batch_indices[:5]
                )
                raise RunFailure(
                    f"epoch {epoch}: the loss is {float(loss)} on a batch of {names}; lower --lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
            else:  # precision "16" on CUDA: scaled backward, unscaled before clipping
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            total += float(loss.detach()) * len(batch_indices)
            count += len(batch_indices)
        return total / max(count, 1)

    @torch.no_grad()
    def predict(self, indices: Sequence[int]) -> tuple[np.ndarray, float]:
        """Probabilities ``[len(indices), C]`` (softmax, or sigmoid per class for
        multi-label) and the mean loss, in eval mode."""
        indices = list(indices)
        self.head.eval()
        if self.full:
            embeddings, _ = encode(self.backbone, self.graphs, self._order(indices), self.device)
            embedding = embeddings[indices]
        else:
            assert self.embeddings is not None
            embedding = self.embeddings[indices]
        logits = self.head(embedding.to(self.device))
        loss = float(self.loss(logits, indices)) if indices else math.nan
        probabilities = torch.sigmoid(logits) if self.multi else torch.softmax(logits, dim=1)
        return probabilities.double().cpu().numpy(), loss

    def snapshot(self) -> dict[str, Any]:
        state = {"head": copy.deepcopy(self.head.state_dict())}
        if self.full:
            state["encoder"] = copy.deepcopy(self.backbone.encoder.state_dict())
        return state

    def restore(self, state: Mapping[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        if "encoder" in state:
            self.backbone.encoder.load_state_dict(state["encoder"])


def _collate(graphs: Any, indices: Sequence[int]) -> Any:
    from ..graph import collate

    return collate([graphs[i] for i in indices])
