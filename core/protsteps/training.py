"""Pretraining: the loop behind ``protsteps pretrain``.

A run lives in one folder::

    RUNDIR/
      config.toml            the resolved run config (``auto`` replaced by what it became)
      metrics.jsonl          one JSON object per logging step and per validation (strict
                             JSON: a non-finite value is null, its key listed in "nonfinite")
      metrics.csv            the same records as CSV (the ``csv`` callback of ``[train]
                             callbacks``, on by default; callbacks get every record)
      .protsteps.lock        held by the process that writes the folder (one at a time)
      checkpoints/last.pt    everything needed to resume exactly (written atomically)
      checkpoints/best.pt    the checkpoint with the lowest validation loss
      encoder.pt             the encoder's weights and config, loadable on their own
                             (:func:`protsteps.export.load_encoder`)
      learning_curve.png     train and validation loss per task over steps (at the end,
                             on resume, and at a validation at most every few minutes)

Determinism: batch order comes from ``(seed, epoch)``; every step reseeds the random
generators from ``(seed, step, rank)``. A run resumed from ``last.pt`` therefore takes the
same batches with the same masks and dropout as one that never stopped, and ends with the
same parameters.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the student is wrapped in
``DistributedDataParallel`` (gloo on CPU, nccl on GPU), each process takes its shard of every
epoch's batches, and only rank 0 writes files.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import _toml
from ._resume import check_checkpoint, refuse_config_changes, restore, way_out
from ._text import count
from ._version import __version__
from .callbacks import TrainingCallbacks
from .errors import ConfigError, ProtstepsError, RunFailure
from .export import encoder_record
from .extensions import CallbackContext, RunStart
from .files import (
    FolderInUseError,
    atomic_torch_save,
    atomic_write_text,
    read_torch_record,
    run_folder_lock,
    strict_json_line,
)
from .graph import Batch
from .model import Composition, compose
from .optim import NonFiniteLossError, SchemeSetup
from .precision import autocast, check_precision
from .progress import ProgressDisplay
from .registry import Catalog
from .runconfig import RunConfig, check_device_name, load_raw
from .threads import ThreadChoice, using_threads

__all__ = ["RunPaths", "Distributed", "PretrainResult", "pretrain", "load_checkpoint"]

CHECKPOINT_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    @property
    def encoder(self) -> Path:
        return self.root / "encoder.pt"

    @property
    def curve(self) -> Path:
        return self.root / "learning_curve.png"


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def pick_device(name: str, dist: Distributed, where: str = "[train] device") -> torch.device:
    """The device ``name`` means on this machine (``where`` names the setting in errors):
    a name protsteps cannot use, CUDA where there is none, or a CUDA index beyond the
    machine's devices is a :class:`ConfigError`."""
    check_device_name(name, where)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank if dist.enabled else 0)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{where} = {name!r} but CUDA is not available on this machine; use 'cpu' or 'auto'"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{where} = {name!r} but this machine has {count(torch.cuda.device_count(), 'CUDA device')} "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where} = 'mps' but MPS is not available on this machine; use 'cpu' or 'auto'")
    if device.type == "cuda" and dist.enabled and device.index is None:
        device = torch.device("cuda", dist.local_rank)
    return device


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed from (seed, step, rank), so each step's randomness is reproducible."""
    value = (seed * 1_000_003 + step) * 1_000_033 + rank
    return (value * 6364136223846793005 + 1442695040888963407) % (2**63 - 1)


def _environment_rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """Steps per epoch, and where each epoch starts in the run's global step count."""

    steps: list[int]

    @property
    def starts(self) -> list[int]:
        return [0, *itertools.accumulate(self.steps)]

    @property
    def total(self) -> int:
        return sum(self.steps)

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, position within it) of global step ``step`` (< total)."""
        epoch = bisect.bisect_right(self.starts, step) - 1
        return epoch, step - self.starts[epoch]

    def completed(self, step: int) -> int:
        """Epochs finished once ``step`` steps have been taken."""
        return bisect.bisect_right(self.starts, step) - 1


@dataclasses.dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    epochs_completed: int
    best_valid_loss: float | None
    skipped_batches: int
    notes: list[str]
    #: stopped early by SIGINT/SIGTERM (last.pt holds where it stopped; resume continues)
    interrupted: bool = False


class MetricsLog:
    """metrics.jsonl, appended by rank 0; on resume, lines after the checkpoint are dropped."""

    def __init__(self, path: Path, enabled: bool, callbacks: TrainingCallbacks | None = None) -> None:
        self.path = path
        self.enabled = enabled
        #: the run's [train] callbacks: each record written goes to them too
        self.callbacks = callbacks or TrainingCallbacks()

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if record.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(strict_json_line(record) + "\n")
            fh.flush()
        self.callbacks.log(record)


class Averages:
    """Running means of logged values between two log lines."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            if math.isfinite(value):
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def clear(self) -> None:
        self.sums.clear()
        self.counts.clear()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`pretrain`, loaded with ``weights_only=True``."""
    return read_torch_record(path, "checkpoint", CHECKPOINT_FORMAT)


def step_status(values: Mapping[str, float]) -> str:
    """The losses of a log line, for the progress display."""
    return "  ".join(f"{k} {v:.4g}" for k, v in values.items() if k.endswith("loss") or k == "mi")


def progress_line(
    step: int, total: int, epoch: int, values: Mapping[str, float], valid: float | None, eta: str
) -> str:
    """A plain progress line (log files): step, training losses since the last log line, the
    last validation loss and the time left."""
    valid_text = f"{valid:.4g}" if valid is not None else "n/a"
    return (
        f"step {step}/{total} ({100 * step / max(total, 1):.0f}%) epoch {epoch}  {step_status(values)}  "
        f"valid loss {valid_text}  ETA {eta}"
    )


#: at a validation, learning_curve.png is redrawn when the last drawing is this old
_CURVE_SECONDS = 120.0


def _last_valid_loss(path: Path) -> float | None:
    from .training_plots import read_metrics

    losses = [
        r["loss"]
        for r in read_metrics(path)
        if r.get("split") == "valid" and isinstance(r.get("loss"), (int, float))
    ]
    return float(losses[-1]) if losses else None


class _CurveWriter:
    """learning_curve.png from metrics.jsonl, by rank 0; a drawing that fails is a warning,
    never the end of a run."""

    def __init__(self, paths: RunPaths, enabled: bool, display: ProgressDisplay) -> None:
        self.paths, self.enabled, self.display = paths, enabled, display
        self.drawn = time.monotonic()  # a short run draws once, at its end

    def write(self, at_most_every: float = 0.0) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.drawn < at_most_every:
            return
        self.drawn = now
        from .training_plots import plot_pretrain_curves

        try:
            plot_pretrain_curves(self.paths.metrics, self.paths.curve, f"pretrain {self.paths.root.name}")
        except Exception as exc:  # a plot is not worth a run
            self.display.warn(f"warning: {self.paths.curve} was not drawn: {type(exc).__name__}: {exc}")


@contextmanager
def _interrupts_as_flag() -> Iterator[dict[str, bool]]:
    """SIGINT/SIGTERM set a flag; the loop checkpoints and stops at the next step boundary."""
    flag = {"stop": False}
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:  # a second signal stops at once
            raise KeyboardInterrupt
        flag["stop"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _init_distributed(dist: Distributed, device: torch.device) -> bool:
    """Join the ``torchrun`` job's process group; True when this call created it (and so must
    destroy it: a gloo group left to interpreter shutdown can abort the process)."""
    if dist.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
        return True
    return False


def _wrap_for(dist: Distributed, find_unused: bool) -> Callable[[nn.Module], nn.Module]:
    if not dist.enabled:
        return lambda module: module

    def wrap(module: nn.Module) -> nn.Module:
        return nn.parallel.DistributedDataParallel(module, find_unused_parameters=find_unused)

    return wrap


def run_summary(
    composition: Composition, device: torch.device, dist: Distributed, threads: ThreadChoice | None = None
) -> str:
    """One line saying what will be trained, for the start of a run."""
    config = composition.config
    teacher = composition.model.teacher
    teacher_text = "none"
    if teacher is not None:
        describe = getattr(teacher, "describe", None)
        teacher_text = describe() if callable(describe) else config.teacher.name
    tasks = ", ".join(f"{t.name} (weight {t.weight:g})" for t in config.tasks)
    processes = f" x {dist.world_size} processes" if dist.enabled else ""
    return (
        f"featurizer {config.featurizer.name} | encoder {config.encoder.name} | tasks {tasks} | "
        f"teacher {teacher_text} | scheme {config.scheme.name} | device {device}{processes}"
        + (f" | precision {config.train.precision}" if config.train.precision != "32" else "")
        + (f" | {threads.describe()}" if threads is not None else "")
    )


def replica_divergence(model: nn.Module) -> float:
    """The largest difference of any parameter between processes (0.0 when DDP kept the
    replicas identical, as it must)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    return float((high - low).max()) if flat.numel() else 0.0


def prepare_run_folder(out: Path, resume: bool) -> RunPaths:
    paths = RunPaths(out)
    if resume:
        if not paths.last.exists():
            raise ProtstepsError(
                f"cannot resume {out}: the run saved no checkpoint ({paths.last} does not exist), so "
                f"there is nothing to continue; start it afresh: rm -r {out} and run the same "
                "command again, or give a new --out"
            )
        return paths
    if paths.last.exists() or paths.metrics.exists():
        raise ProtstepsError(
            f"{out} already holds a run; continue it with --resume {out}, or choose a new --out"
        )
    return paths


def pretrain(
    config: RunConfig,
    out: Path,
    catalog: Catalog,
    *,
    resume: bool = False,
    show_progress: bool = True,
    data_source: Callable[..., Any] | None = None,
    max_steps: int | None = None,
) -> PretrainResult:
    """Train ``config`` into the run folder ``out`` (or continue it with ``resume``).

    ``max_steps`` stops after that many optimiser steps in total (for tests that simulate an
    interruption); ``data_source`` replaces the featurize cache (tests).
    """
    dist = Distributed.from_environment()
    if config.train.deterministic:
        # cuBLAS needs a fixed workspace for reproducible results; set before CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = pick_device(config.train.device, dist)
    check_precision(config.train.precision, device)
    torch.use_deterministic_algorithms(config.train.deterministic, warn_only=device.type == "cuda")
    owns_group = _init_distributed(dist, device)
    # one writer per run folder: rank 0 holds its lock for the whole run (a resume of a
    # folder that is not there is refused by prepare_run_folder, without creating it)
    lock = (
        run_folder_lock(out, "pretrain") if dist.is_main and (out.is_dir() or not resume) else nullcontext()
    )
    try:
        with lock, using_threads(config.train.threads, workers=config.train.workers) as threads:
            return _pretrain(
                config,
                out,
                catalog,
                dist,
                device,
                resume=resume,
                show_progress=show_progress,
                data_source=data_source,
                max_steps=max_steps,
                threads=threads,
            )
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


def _pretrain(
    config: RunConfig,
    out: Path,
    catalog: Catalog,
    dist: Distributed,
    device: torch.device,
    *,
    resume: bool,
    show_progress: bool,
    data_source: Callable[..., Any] | None,
    max_steps: int | None,
    threads: ThreadChoice | None = None,
) -> PretrainResult:
    from .training_data import prepare_training_data

    paths = prepare_run_folder(out, resume)
    checkpoint = load_checkpoint(paths.last) if resume else None
    if checkpoint is not None:
        check_checkpoint(checkpoint, paths.last, out)
    if checkpoint is not None and int(checkpoint["epoch"]) > config.train.epochs:
        raise ProtstepsError(
            f"{out} has already completed {count(int(checkpoint['epoch']), 'epoch')}; resuming with "
            f"{config.train.epochs} would rewrite its record (give --epochs {checkpoint['epoch']} or more)"
        )

    torch.manual_seed(config.train.seed)
    composition: Composition = compose(config, catalog)
    resolved = composition.config
    if checkpoint is not None:
        refuse_config_changes(_normalised(checkpoint["config"], catalog), resolved.to_dict(), out)
    # built before anything is written: an unknown callback or a missing package costs nothing
    callbacks = TrainingCallbacks.build(
        catalog,
        resolved.train.callbacks,
        CallbackContext(run_dir=out, config=resolved.to_dict(), resume=checkpoint is not None),
        enabled=dist.is_main,
    )
    model = composition.model.to(device)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.config, resolved.dumps())
    display = ProgressDisplay("pretrain", show_progress and dist.is_main, warnings=dist.is_main)
    for note in composition.notes:
        display.message(note)
    display.message(run_summary(composition, device, dist, threads))

    data = (data_source or prepare_training_data)(
        resolved, composition.featurizer, dist=dist, display=display, run_dir=out if dist.is_main else None
    )
    # the length-aware sampler packs a different number of batches each epoch: plan them all
    plan = EpochPlan(data.epoch_steps(resolved.train.epochs))
    if not plan.total or any(n == 0 for n in plan.steps):
        raise ProtstepsError(
            "no training batches: every structure failed or was filtered out (see the report)"
        )
    total_steps = plan.total
    scheme = composition.scheme
    scheme.setup(
        SchemeSetup(
            model=model,
            train=resolved.train,
            total_steps=total_steps,
            device=device,
            # a task with weight 0 leaves its head without gradients, which DDP must be told
            wrap=_wrap_for(dist, find_unused=any(t.weight == 0 for t in resolved.tasks)),
            distributed=dist.enabled,
            epoch_starts=plan.starts,
            notify=display.message,
        )
    )

    step = 0
    best = math.inf
    skipped = 0
    if checkpoint is not None:
        if int(checkpoint["step"]) > total_steps:
            raise ProtstepsError(
                f"cannot resume from {paths.last}: it is at step {checkpoint['step']}, beyond the "
                f"{total_steps} steps this run plans (its data changed?); {way_out(out)}"
            )
        restore(checkpoint, model, scheme, paths.last, out)
        step = int(checkpoint["step"])
        best = float(checkpoint["best_valid_loss"])
        skipped = int(checkpoint["skipped_batches"])
        display.message(f"resuming {out} at step {step}")
    callbacks.warn = display.warn
    metrics = MetricsLog(paths.metrics, dist.is_main, callbacks)
    metrics.truncate_after(step)
    curve = _CurveWriter(paths, dist.is_main, display)
    if checkpoint is not None:
        curve.write()  # the run so far, before it goes on
    last_valid = _last_valid_loss(paths.metrics) if dist.is_main else None

    display.start(total_steps, step)
    callbacks.start(RunStart(step=step, total_steps=total_steps))
    averages = Averages()
    residues_since = 0
    time_since = time.perf_counter()
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    epochs_completed = plan.completed(step)

    def save(path: Path, epoch_done: int) -> None:
        if not dist.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "protsteps_version": __version__,
            "step": step,
            "epoch": epoch_done,
            "model": model.state_dict(),
            "scheme": scheme.state_dict(),
            "best_valid_loss": best,
            "skipped_batches": skipped,
            "config": resolved.to_dict(),
            "rng": _environment_rng_state(),
        }
        atomic_torch_save(state, path)

    def export_encoder() -> None:
        if dist.is_main:
            atomic_torch_save(
                encoder_record(
                    model.encoder,
                    resolved,
                    model.teacher.embed_dim if model.teacher else None,
                    teacher=model.teacher,
                    teacher_fingerprint=model.teacher_fingerprint,
                ),
                paths.encoder,
            )

    try:
        with _interrupts_as_flag() as interrupted:
            while step < stop_at and not interrupted["stop"]:
                epoch, position = plan.locate(step)
                epoch_end = plan.starts[epoch + 1]
                model.train()
                for batch in data.train_batches(epoch, start=position):
                    seed = step_seed(resolved.train.seed, step, dist.rank)
                    torch.manual_seed(seed)
                    generator = torch.Generator().manual_seed(seed)
                    batch = batch.to(device)
                    try:
                        # the scheme's forward passes under autocast; StudentOptimisation
                        # runs the backward outside it, with the gradient scaler of "16"
                        with autocast(resolved.train.precision, device):
                            values = scheme.step(batch, generator)
                    except NonFiniteLossError as exc:
                        if resolved.train.nonfinite == "stop":
                            save(paths.last, epoch)
                            raise RunFailure(
                                f"stopped at step {step}: {exc}. The last good checkpoint is {paths.last}; "
                                'lower [train] lr, or set [train] nonfinite = "skip" to skip such batches'
                            ) from None
                        skipped += 1
                        values = {"skipped": 1.0}
                    step += 1
                    residues_since += batch.num_nodes * dist.world_size
                    averages.add(values)
                    means = averages.means()
                    display.update(
                        step,
                        f"epoch {epoch} loss {means.get('loss', math.nan):.4g}"
                        + (f" valid {last_valid:.4g}" if last_valid is not None else ""),
                        progress_line(step, total_steps, epoch, means, last_valid, display.eta(step)),
                    )
                    if step % resolved.train.log_every == 0 or step in (stop_at, epoch_end):
                        elapsed = max(time.perf_counter() - time_since, 1e-9)
                        record = {
                            "step": step,
                            "epoch": epoch,
                            "split": "train",
                            **averages.means(),
                            "residues_per_second": residues_since / elapsed,
                            "skipped_batches": skipped,
                            "threads": torch.get_num_threads(),
                        }
                        metrics.write(record)
                        averages.clear()
                        residues_since = 0
                        time_since = time.perf_counter()
                    if resolved.train.checkpoint_every and step % resolved.train.checkpoint_every == 0:
                        save(paths.last, epoch)
                    if step >= stop_at or interrupted["stop"]:
                        break
                if step < epoch_end and not (step >= stop_at or interrupted["stop"]):
                    raise RuntimeError(
                        f"epoch {epoch} ended after step {step}, its plan said {epoch_end}: the batches "
                        "of an epoch must not change while it runs"
                    )
                if step == epoch_end:
                    epochs_completed = plan.completed(step)
                    valid_loss = data.validate(model, resolved, device) if dist.is_main else None
                    if valid_loss is not None:
                        metrics.write(
                            {"step": step, "epoch": epochs_completed - 1, "split": "valid", **valid_loss}
                        )
                        last_valid = valid_loss["loss"]
                        curve.write(at_most_every=_CURVE_SECONDS)
                    score = valid_loss["loss"] if valid_loss is not None else None
                    improved = dist.is_main and (score is None or score < best)
                    if improved:
                        best = score if score is not None else best
                    save(paths.last, epochs_completed)
                    if improved:
                        save(paths.best, epochs_completed)
                        export_encoder()
                    dist.barrier()
            stopped_early = bool(interrupted["stop"]) and step < stop_at
            if step < total_steps:  # stopped early, or max_steps reached: resume continues here
                save(paths.last, epochs_completed)
    except BaseException:
        callbacks.end("failed")
        raise
    finally:
        display.close()
        curve.write()
    if dist.is_main and not paths.encoder.exists():
        export_encoder()
    if dist.enabled:
        divergence = replica_divergence(model)
        metrics.write(
            {
                "step": step,
                "split": "replicas",
                "world_size": dist.world_size,
                "max_parameter_difference": divergence,
            }
        )
        if divergence > 0:
            display.message(f"warning: parameters differ across processes by up to {divergence:.3g}")
        dist.barrier()
    callbacks.end("completed" if step >= total_steps else "interrupted")
    return PretrainResult(
        run_dir=out,
        steps=step,
        epochs_completed=epochs_completed,
        best_valid_loss=None if math.isinf(best) else best,
        skipped_batches=skipped,
        notes=composition.notes,
        interrupted=stopped_early,
    )


@contextmanager
def removed_on_failure(out: Path, *, resume: bool, is_main: bool = True) -> Iterator[None]:
    """Take back what a new run wrote into ``out`` when it fails (an error, Ctrl-C) before
    saving a checkpoint: the folder itself when the run made it, else the files and folders
    it added. A resumed run, a run with ``checkpoints/last.pt`` (it can be resumed), and
    processes other than rank 0 leave everything as it is."""
    existed = out.is_dir()
    before = {p.name for p in out.iterdir()} if existed else set()
    try:
        yield
    except FolderInUseError:
        raise  # the folder is another process's: touch nothing
    except BaseException:
        if not resume and is_main and not RunPaths(out).last.exists() and out.is_dir():
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for entry in out.iterdir():
                    if entry.name not in before:
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry, ignore_errors=True)
                        else:
                            entry.unlink(missing_ok=True)
        raise


def resume_config(out: Path, catalog: Catalog) -> RunConfig:
    """The resolved config of an existing run folder."""
    path = RunPaths(out).config
    if not out.is_dir():
        raise ProtstepsError(f"cannot resume {out}: no such folder; start a run with --out {out}")
    if not path.exists():
        raise ProtstepsError(
            f"cannot resume {out}: it holds no run ({path} does not exist); start one with --out "
            f"{out}, or give the folder of the run to continue"
        )
    try:
        return RunConfig.from_dict(load_raw(path), catalog)
    except ConfigError as exc:
        raise ConfigError(
            f"cannot resume {out}: {path}: {exc}; undo the edit of {path.name} (a resumed run keeps "
            "the settings it started with)"
        ) from None


def _normalised(raw: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A checkpoint's config with every default filled in, as :meth:`RunConfig.to_dict`
    gives it (the raw tables when they no longer validate, e.g. a plugin since removed)."""
    try:
        return RunConfig.from_dict(raw, catalog).to_dict()
    except ProtstepsError:
        return dict(raw)


def dump_config_text(config: RunConfig) -> str:
    return _toml.dumps(config.to_dict())


def describe_sources(batch: Batch) -> Sequence[str]:
    return [f"{s}:{c}" for s, c in zip(batch.sources, batch.chain_ids, strict=True)]
