"""LightningCLI for `captioner fit | validate | test | predict`: YAML configs with public class paths, the module
and the data joined by `train.connect` (the tokenizer resolved once, in one direction), `--ckpt_path last`, and
one line for a key that moved (`train.moved`)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from captioner.data.base import CaptionDataModule
from captioner.train.callbacks import callbacks_of
from captioner.train.connect import connect
from captioner.train.module import CaptionerModule
from captioner.train.moved import check_moved
from captioner.train.progress import StepProgressBar
from captioner.train.run_folder import RunFolder


def default_precision() -> str:
    """bf16-mixed where the GPU supports it, else 32-bit (CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class CaptionerCLI(LightningCLI):
    """LightningCLI whose module and data are joined by `train.connect` once both are built."""

    def instantiate_classes(self) -> None:
        """Build data, model and trainer, then connect the data and the model explicitly (`train.connect`)."""
        super().instantiate_classes()
        connect(self.model, self.datamodule, self.trainer)
        if self.subcommand == "fit":  # first: the folder is locked before any other callback writes into it
            callbacks_of(self.trainer).insert(0, RunFolder())
            mirror_in_tensorboard(self.trainer)
        if not self._configured(ProgressBar):  # Lightning's default bar: ours counts steps when max_steps is set
            callbacks = callbacks_of(self.trainer)
            for bar in [c for c in callbacks if type(c) is RichProgressBar]:
                callbacks[callbacks.index(bar)] = StepProgressBar()

    def before_fit(self) -> None:
        for callback in callbacks_of(self.trainer):
            if isinstance(callback, RunFolder):
                callback.claim(self.trainer)

    def _configured(self, kind: type) -> bool:
        """Whether the config (before instantiation: class paths) names a callback of this kind."""
        from jsonargparse import Namespace
        from jsonargparse.typing import import_object

        config = self.config[self.subcommand] if self.subcommand else self.config
        callbacks = config.get("trainer", {}).get("callbacks") or []
        for c in callbacks if isinstance(callbacks, list) else [callbacks]:
            path = c.get("class_path") if isinstance(c, (Namespace, dict)) else None
            if path and isinstance(cls := import_object(path), type) and issubclass(cls, kind):
                return True
        return False

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({"trainer.precision": default_precision()})

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            resolve_last_checkpoint(config)


def mirror_in_tensorboard(trainer) -> None:
    """A run logged by one CSVLogger (every config) is logged to TensorBoard too, in the same folder (same
    save_dir, name and version): one `trainer.logger.init_args.save_dir` still places the run, and
    `tensorboard --logdir <save_dir>/<name>` shows it. Configure a logger list (W&B, ...) to choose otherwise."""
    loggers = trainer.loggers
    if len(loggers) != 1 or type(loggers[0]) is not CSVLogger:
        return
    csv = loggers[0]
    tensorboard = TensorBoardLogger(csv.save_dir, name=csv.name, version=csv.version, default_hp_metric=False)
    trainer.loggers = [csv, tensorboard]  # the CSV logger first: trainer.log_dir stays its folder


def resolve_last_checkpoint(config) -> None:
    """`--ckpt_path last`: the newest last.ckpt of this config's runs; the resumed run logs into the same folder
    (`RunFolder` locks it and keeps the metrics logged before the resume as metrics.partN.csv)."""
    logger = config.trainer.get("logger")
    args = logger.get("init_args") if hasattr(logger, "get") else None
    if args is None or not args.get("save_dir"):
        return  # no logger folder to search: Lightning's own "last" lookup applies
    runs = Path(args["save_dir"]) / (args.get("name") or "lightning_logs")
    found = sorted(runs.glob("version_*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"ckpt_path=last: no last.ckpt under {runs}/version_*/checkpoints")
    config.ckpt_path = str(found[-1])
    run_dir = found[-1].parent.parent
    version = run_dir.name.removeprefix("version_")
    args["version"] = int(version) if version.isdigit() else version


def trainer_cli(args: list[str] | None = None, run: bool = True) -> CaptionerCLI:
    """Build (and by default run) the LightningCLI; `args` replaces the command line."""
    # The command goes through sys.argv, not `args=`: Lightning's DDP launcher starts the other ranks by running
    # sys.argv again, so it must hold the whole command (and LightningCLI warns when both are given).
    check_moved(sys.argv[1:] if args is None else args)
    argv = sys.argv
    if args is not None:
        sys.argv = [argv[0], *args]
    try:
        return CaptionerCLI(
            CaptionerModule,
            CaptionDataModule,
            subclass_mode_data=True,
            args=None,
            run=run,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},  # a resumed run rewrites its own config.yaml
        )
    finally:
        sys.argv = argv
