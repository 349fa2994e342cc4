"""One run per log folder, and a resume that keeps what the folder holds.

Two runs logging into one folder (a `--ckpt_path last` started while the run it resumes is still alive, or two
resumes at once) overwrite each other's checkpoints and crash in the CSV logger. `RunFolder.claim` takes an
exclusive lock on the folder for the whole of `fit`, before anything is written into it: a second run is refused.
Lightning's CSV logger deletes the folder's metrics.csv when `fit` starts; `claim` first keeps it as
metrics.partN.csv. A resume that then fails before training starts (a checkpoint that does not load, or does not
fit the config) puts it back, and config.yaml as it was, and removes the TensorBoard event file it opened, so the
folder is left as it was.

The CLI adds the callback to every `captioner fit` and claims before `trainer.fit` (LightningCLI's `before_fit`).
From Python: `Trainer(callbacks=[run_folder := RunFolder(), ...])`, then `run_folder.claim(trainer)` before
`trainer.fit` (without the claim, `setup` still takes the lock, but metrics.csv is not kept).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from captioner.outputs import atomic_file

EVENTS = "events.out.tfevents.*"  # TensorBoard's files, opened when fit starts


class RunFolderBusy(OSError):
    """The log folder is being written by another live run."""


class RunFolder(L.Callback):
    def __init__(self) -> None:
        self._fd: int | None = None
        self._claimed, self._started = False, False
        self._kept: list[tuple[Path, Path]] = []  # (metrics.partN.csv, the metrics.csv it was)
        self._config: tuple[Path, bytes] | None = None  # config.yaml as it was (LightningCLI rewrites it in setup)
        self._folder: Path | None = None
        self._events: set[Path] = set()

    def claim(self, trainer: L.Trainer) -> None:
        """Lock the run's log folder (rank 0) and keep its metrics.csv aside; before `trainer.fit`."""
        if self._claimed or not trainer.loggers:
            return
        self._claimed = True
        log_dir = trainer.log_dir  # on every rank: a collective (a broadcast) under DDP
        if log_dir is None or not trainer.is_global_zero:  # None: a logger that writes no folder
            return
        folder = Path(log_dir)
        self._fd = lock_folder(folder)
        self._folder, self._events = folder, set(folder.glob(EVENTS))
        if (config := folder / "config.yaml").is_file():
            self._config = (config, config.read_bytes())
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger) and (kept := keep_metrics(Path(logger.log_dir))):
                self._kept.append((kept, Path(logger.log_dir) / "metrics.csv"))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.claim(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = True  # the checkpoint, optimizer and loop state have loaded
        log_dir = trainer.log_dir  # on every rank: a collective (a broadcast) under DDP
        if self._claimed and log_dir and trainer.is_global_zero:  # where to look, once the run is sure to go ahead
            where = f"run folder {log_dir}"
            if any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):
                where += f"; TensorBoard: tensorboard --logdir {Path(log_dir).parent}"
            print(where, file=sys.stderr)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not self._started:  # the resume failed before it trained: the folder as it was
            for kept, metrics in self._kept:
                if kept.is_file() and not metrics.exists():
                    kept.rename(metrics)
            if self._config is not None:
                with atomic_file(self._config[0], "wb") as f:
                    f.write(self._config[1])
            if self._folder is not None:  # the TensorBoard event file this failed start opened
                for events in set(self._folder.glob(EVENTS)) - self._events:
                    events.unlink(missing_ok=True)
            self._kept, self._config = [], None
        self.teardown(trainer, pl_module, "fit")  # then the lock goes: Lightning calls no teardown after an exception

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock (so does the end of the process, whatever ends it)
            self._fd = None


def lock_folder(folder: Path) -> int | None:
    """An exclusive lock on the folder itself (nothing is written into it); the open descriptor holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        os.close(fd)
        raise RunFolderBusy(
            f"{folder} is being written by another training run that is still alive; wait for it to end (or stop "
            "it) before resuming it, or log this run elsewhere (trainer.logger.init_args.version)"
        ) from err
    return fd


def keep_metrics(folder: Path) -> Path | None:
    """metrics.csv renamed to the next free metrics.partN.csv (Lightning's CSV logger would delete it)."""
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return None
    n = 0
    while (folder / f"metrics.part{n}.csv").exists():
        n += 1
    kept = folder / f"metrics.part{n}.csv"
    metrics.rename(kept)
    return kept
