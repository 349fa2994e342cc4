"""Lightning callbacks: export the model package at the end of `fit`, write predictions, checkpoint on SIGTERM; the
trainer's callbacks and data module, which Lightning sets at run time, typed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from captioner.outputs import check_apart, write_jsonl
from captioner.package import TrainingInfo
from captioner.train.lora import merged
from captioner.train.module import CaptionerModule


def callbacks_of(trainer: L.Trainer) -> list[L.Callback]:
    """The trainer's callbacks, in order; a list to insert into before `fit`."""
    callbacks: list[L.Callback] = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning at run time
    return callbacks


def datamodule_of(trainer: L.Trainer) -> L.LightningDataModule | None:
    """The data module the trainer runs on, if any."""
    datamodule: L.LightningDataModule | None = trainer.datamodule  # type: ignore[attr-defined]  # set at run time
    return datamodule


class ExportModelPackage(L.Callback):
    """Writes the trained model as a model package (`captioner.package`; LoRA merged into plain weights, on a
    copy), with its training.json: steps, data,
    the token ids its captions used, the resolved config, and the module's `provenance()` (objective, start
    package, optimiser settings).

    Args:
        dirpath: where to write it; default `<log_dir>/model`, next to the Lightning checkpoints.
        overwrite: replace an existing package there (otherwise an existing folder is an error).
    """

    def __init__(self, dirpath: str | None = None, overwrite: bool = False) -> None:
        self.dirpath, self.overwrite = dirpath, overwrite
        self.exported: Path | None = None

    def target(self, trainer: L.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "model"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = self.target(trainer)  # the checks run on every rank, so that all of them stop together
        if target.exists() and not self.overwrite:  # fail now, not after hours of training
            raise FileExistsError(f"model package folder {target} exists; set a new dirpath or overwrite: true")
        # overwrite: true must never replace the package the run starts from or the data it trains on
        described: dict[str, Any] = getattr(datamodule_of(trainer), "describe", dict)()
        package = getattr(pl_module, "package", None)  # the folder the run starts from (a Hub download too)
        found = [str(package) if package else None, *(described.get(k) for k in ("train", "val", "root"))]
        reads = [fixed_part(p) for p in found if isinstance(p, str) and p]
        check_apart([target], [p for p in reads if Path(p).exists()], "ExportModelPackage dirpath")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = self.target(trainer)  # on every rank: trainer.log_dir is a collective (a broadcast) under DDP
        if not trainer.is_global_zero:
            return
        if not isinstance(pl_module, CaptionerModule):
            raise TypeError(f"ExportModelPackage exports a CaptionerModule's model, not a {type(pl_module).__name__}")
        model, tokenizer = merged(pl_module.built()[0]), pl_module.built()[1]  # LoRA merged, on a copy
        dm = datamodule_of(trainer)
        note = f"Trained with `captioner fit` for {trainer.global_step} steps on {type(dm).__name__}."
        data: dict[str, Any] = getattr(dm, "describe", dict)()
        used_token_ids = getattr(dm, "used_token_ids", None)
        used = used_token_ids() if used_token_ids else None
        info = TrainingInfo.from_dict(
            {"steps": trainer.global_step, "data": data, "used_token_ids": used, "config": model.config.to_dict()}
            | pl_module.provenance()
        )
        model.save_pretrained(target, tokenizer, self.overwrite, note, training=info)
        self.exported = target
        rank_zero_info(f"model package written to {target}")


class CaptionWriter(BasePredictionWriter):
    """Writes `captioner predict` output as JSON lines (index, caption, references) to `<log_dir>/predictions.jsonl`.

    Args:
        path: output file; default `<log_dir>/predictions.jsonl`. An existing file is never overwritten.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = path

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        path = Path(self.path) if self.path else Path(trainer.log_dir or ".") / "predictions.jsonl"
        if trainer.world_size > 1:  # each rank captions its share of the data: one file per rank
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        rows = [{k: r[k] for k in ("index", "caption", "references")} for batch in predictions for r in batch]
        write_jsonl(path, rows)
        rank_zero_info(f"wrote {len(rows)} captions to {path}")


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM (a preempted cloud VM, SLURM before the time limit) Lightning stops at the next batch boundary;
    this saves `last.ckpt` in the checkpoint folder first, so that `captioner fit ... --ckpt_path last` resumes.
    On SLURM, Lightning's own auto-requeue (SIGUSR1 with `#SBATCH --signal=SIGUSR1@90`) also saves and requeues."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException):
            return
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)  # ModelCheckpoint's folder
        folder = Path(dirpath or trainer.log_dir or trainer.default_root_dir)
        path = folder / "last.ckpt"
        _at_epoch_end_start_the_next(trainer)
        with _as_saved_at_validation(trainer):
            trainer.save_checkpoint(path)
        rank_zero_info(f"SIGTERM: saved {path} at step {trainer.global_step}; resume with --ckpt_path last")


def _at_epoch_end_start_the_next(trainer: L.Trainer) -> None:
    """A SIGTERM during an epoch's last batch is raised after the epoch has completed (Lightning's fit loop,
    `on_advance_end`) but before the next epoch resets the batch counters; a checkpoint of that state resumes into
    an epoch that believes its batches are done and ends it after one. Reset the counters as the next epoch's start
    would (the run stops right after), so that the resumed run trains the same batches as an uninterrupted one."""
    fit, epoch = trainer.fit_loop, trainer.fit_loop.epoch_loop
    current = fit.epoch_progress.current
    finished = current.completed == current.processed  # type: ignore[attr-defined]  # hinted as its base class
    if finished and epoch.batch_progress.current.completed >= trainer.num_training_batches:
        epoch.batch_progress.reset_on_run()
        epoch.scheduler_progress.reset_on_run()
        epoch.automatic_optimization.optim_progress.reset_on_run()
        epoch.val_loop.batch_progress.total.reset()


@contextlib.contextmanager
def _as_saved_at_validation(trainer: L.Trainer) -> Iterator[None]:
    """A run resumed at a step where validation is due skips that validation and counts one logging step without
    training a batch (Lightning's epoch loop, `advance` on restart): it expects ModelCheckpoint's checkpoint of the
    validation, written before the step was counted. Ours is written after, so it would log every later step one
    too late; save the count as that checkpoint holds it."""
    epoch = trainer.fit_loop.epoch_loop
    due = epoch._should_check_val_fx(trainer.fit_loop._data_fetcher)  # type: ignore[arg-type]  # set while fitting
    epoch._batches_that_stepped -= int(due)
    try:
        yield
    finally:
        epoch._batches_that_stepped += int(due)


def fixed_part(path: str) -> str:
    """The folder a brace pattern or glob reads from (`shards/{000..009}.tar` -> `shards`); a plain path as it is."""
    cut = min((i for i in (path.find(c) for c in "{*?[") if i >= 0), default=-1)
    return path if cut < 0 else os.path.dirname(path[:cut]) or "."
