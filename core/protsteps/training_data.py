"""The data side of pretraining: inputs -> featurize cache -> train/validation batches."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._text import count
from .data import GraphDataset, LengthBatchSampler
from .errors import ProtstepsError
from .featurize import FeaturizeReport, featurize_many
from .graph import Batch, collate, collate_packed
from .optim import NonFiniteLossError
from .progress import FileProgress
from .runconfig import RunConfig

__all__ = ["TrainingData", "prepare_training_data", "split_by_source", "validation_loss"]

VALIDATION_SEED_OFFSET = 7_919


def split_by_source(entries: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation chains. Whole files go to one side, so the chains
    of a complex never straddle the split; the choice depends only on the seed."""
    sources = sorted({str(e["source"]) for e in entries})
    if fraction <= 0 or len(sources) < 2:
        return list(range(len(entries))), []
    rng = np.random.default_rng(np.random.SeedSequence([seed, VALIDATION_SEED_OFFSET]))
    order = rng.permutation(len(sources))
    count = min(max(1, round(fraction * len(sources))), len(sources) - 1)
    valid_sources = {sources[i] for i in order[:count]}
    train = [i for i, e in enumerate(entries) if str(e["source"]) not in valid_sources]
    valid = [i for i, e in enumerate(entries) if str(e["source"]) in valid_sources]
    return train, valid


@torch.no_grad()
def validation_loss(
    model: Any, batches: Iterator[Batch], seed: int, device: torch.device, skip_nonfinite: bool = False
) -> dict[str, float] | None:
    """Mean losses and metrics of ``model`` over ``batches`` with fixed corruption (the same
    masks at every validation), the teacher's stored tail and the model in eval mode.

    A batch on which a task refuses its targets (:class:`~protsteps.optim.NonFiniteLossError`)
    is passed over and counted (``skipped_batches``) with ``skip_nonfinite``; otherwise the
    error goes on, saying it came from the validation."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    weight = 0
    skipped = 0
    try:
        for index, batch in enumerate(batches):
            batch = batch.to(device)
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
            corrupted, states = model.corrupt(batch, generator)
            features = model.teacher_features(corrupted)
            try:
                loss, _, logs = model.pretext_loss(corrupted, states, features)
            except NonFiniteLossError as exc:
                if not skip_nonfinite:
                    raise NonFiniteLossError(
                        f'validation: {exc}; set [train] nonfinite = "skip" to pass over such batches'
                    ) from None
                skipped += 1
                continue
            values = {"loss": float(loss), **{k: float(v) for k, v in logs.items()}}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value * batch.num_graphs
            weight += batch.num_graphs
    finally:
        model.train(was_training)
    if weight == 0:
        # every batch passed over: a loss that is no loss (never the best), and the count
        return {"loss": math.nan, "skipped_batches": float(skipped)} if skipped else None
    result = {key: value / weight for key, value in sums.items()}
    if skipped:
        result["skipped_batches"] = float(skipped)
    return result


@dataclasses.dataclass
class TrainingData:
    """Training and validation chains with the sampler that batches them."""

    train: GraphDataset
    valid: GraphDataset | None
    sampler: LengthBatchSampler
    seed: int
    workers: int
    report: FeaturizeReport | None = None

    def steps_in_epoch(self, epoch: int) -> int:
        """This process's batches in ``epoch`` (the same in every process)."""
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    def epoch_steps(self, epochs: int) -> list[int]:
        """This process's batches in each of ``epochs`` epochs. Without a residue budget every
        epoch has the same number (counted once); with one, each epoch is packed and counted
        (about 0.1 ms per epoch per hundred chains)."""
        if self.sampler.max_residues == 0:
            return [self.steps_in_epoch(0)] * epochs
        return [self.steps_in_epoch(epoch) for epoch in range(epochs)]

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This process's batches of ``epoch`` from position ``start`` on."""
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches()[start:]
        if self.workers > 0:
            # each batch is read as one (GraphDataset.__getitems__) and crosses from its
            # worker as one buffer (see PackedBatch)
            loader = torch.utils.data.DataLoader(
                self.train, batch_sampler=batches, collate_fn=collate_packed, num_workers=self.workers
            )
            for packed in loader:
                yield packed.unpack()
            return
        for indices in batches:
            yield collate(self.train.__getitems__(indices))

    def valid_batches(self) -> Iterator[Batch]:
        if self.valid is None:
            return
        sampler = LengthBatchSampler(
            self.valid.lengths,
            max_residues=self.sampler.max_residues,
            batch_size=self.sampler.batch_size,
            shuffle=False,
        )
        for indices in sampler.batches():
            yield collate(self.valid.__getitems__(indices))

    def validate(self, model: Any, config: RunConfig, device: torch.device) -> dict[str, float] | None:
        if self.valid is None:
            return None
        return validation_loss(
            model, self.valid_batches(), config.train.seed, device, config.train.nonfinite == "skip"
        )


def bundled_inputs() -> list[str]:
    from .examples import structures

    return [str(p) for p in structures()]


def prepare_training_data(
    config: RunConfig,
    featurizer: Any,
    *,
    dist: Any,
    display: Any,
    run_dir: Path | None = None,
) -> TrainingData:
    """Featurize the inputs through the cache, split by source file, and build the
    length-aware sampler of this process's shard. Under ``torchrun`` every rank first
    featurizes its own share of the inputs (``featurize_many(shard=(rank, world_size))``)
    into the one store; after a barrier each rank takes the union from the store, where
    every input is then a hit (an unchanged file's hash comes from the store's index, so
    no rank reads another's inputs)."""
    inputs = list(config.data.inputs) or bundled_inputs()
    if not config.data.inputs:
        display.message(f"no inputs given: training on the {len(inputs)} bundled example structures")
    cache_dir = config.data.cache_dir or None

    def run(shard: tuple[int, int] | None = None) -> FeaturizeReport:
        watch = FileProgress(display.message)
        return featurize_many(
            inputs,
            config.featurizer.name,
            config.featurizer.config,
            cache_dir=cache_dir,
            workers=max(1, config.train.workers),
            on_total=watch.total,
            on_result=watch.result,
            shard=shard,
        )

    if dist.world_size > 1:
        run((dist.rank, dist.world_size))
        dist.barrier()
    report = run()
    if run_dir is not None and dist.is_main:
        report.write(run_dir / "featurize-report.json")
    entries = [e for e in report.ok if int(e["residues"]) >= config.data.min_residues]
    short = len(report.ok) - len(entries)
    display.message(
        f"structures: {count(report.files, 'file')} -> {count(len(report.ok), 'chain')}"
        + (f" ({short} shorter than {config.data.min_residues} residues left out)" if short else "")
    )
    if report.failed:
        display.warn(
            f"warning: {count(len(report.failed), 'input')} could not be used (first: {report.failed[0]['error']}); "
            "every one with its reason in featurize-report.json"
        )
    if not entries:
        reasons = "; ".join(str(f["error"]) for f in report.failed[:3])
        raise ProtstepsError(
            f"no usable training chains from {count(len(inputs), 'input')}"
            + (f" ({reasons})" if reasons else "")
        )
    dataset = GraphDataset(entries, report.cache_dir)
    train_idx, valid_idx = split_by_source(entries, config.train.valid_fraction, config.train.seed)
    train = dataset.subset(train_idx)
    valid = dataset.subset(valid_idx) if valid_idx else None
    display.message(f"training on {count(len(train), 'chain')}, validating on {len(valid) if valid else 0}")
    if config.train.max_residues == 0 and config.train.batch_size < 1:
        raise ProtstepsError("[train] batch_size must be >= 1 when max_residues is 0")
    sampler = LengthBatchSampler(
        train.lengths,
        max_residues=config.train.max_residues,
        batch_size=config.train.batch_size if config.train.max_residues == 0 else 0,
        shuffle=True,
        seed=config.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    if math.isfinite(len(sampler)) and len(sampler) == 0:
        raise ProtstepsError("no training batches could be formed")
    return TrainingData(train, valid, sampler, config.train.seed, config.train.workers, report)
