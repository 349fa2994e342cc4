"""LightningCLI for `captioner fit | validate | test | predict`: YAML configs with public class paths, the data's
vocabulary size linked to the model, the package's or GPT-2's tokenizer for the data, `--ckpt_path last`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from captioner.data.base import CaptionDataModule
from captioner.hub import resolve_package
from captioner.model import TOKENIZER_FILE
from captioner.train.connect import connect
from captioner.train.module import CaptionerModule
from captioner.train.progress import StepProgressBar
from captioner.train.run_folder import RunFolder


def default_precision() -> str:
    """bf16-mixed where the GPU supports it, else 32-bit (CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class CaptionerCLI(LightningCLI):
    """LightningCLI with the tokenizer's vocabulary size linked from the data to the model, and the two connected."""

    def instantiate_classes(self) -> None:
        """Build data, model and trainer, then connect the data and the model explicitly (`train.connect`)."""
        super().instantiate_classes()
        connect(self.model, self.datamodule, self.trainer)
        if self.subcommand == "fit":  # first: the folder is locked before any other callback writes into it
            self.trainer.callbacks.insert(0, RunFolder())
            mirror_in_tensorboard(self.trainer)
        if not self._configured(ProgressBar):  # Lightning's default bar: ours counts steps when max_steps is set
            bars = [c for c in self.trainer.callbacks if type(c) is RichProgressBar]
            for bar in bars:
                self.trainer.callbacks[self.trainer.callbacks.index(bar)] = StepProgressBar()

    def before_fit(self) -> None:
        for callback in self.trainer.callbacks:
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

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.set_defaults({"trainer.precision": default_precision()})

    def before_instantiate_classes(self) -> None:
        """The data uses the model's tokenizer instead of training one: the package's when fine-tuning
        (`model.init_from`), GPT-2's when the decoder starts from GPT-2 (`model.config.decoder_init_from`),
        extended by `model.extend_vocab` tokens learned from the data's training captions."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            resolve_last_checkpoint(config)
        package = config.model.get("init_from")
        if package:  # a Hub repo id (org/name or org/name@revision) becomes its downloaded folder
            package = config.model["init_from"] = str(resolve_package(package))
        data_args = config.data.get("init_args") if hasattr(config.data, "get") else None
        model_config = config.model.get("config")
        gpt2 = model_config.get("decoder_init_from") if model_config is not None else None
        if gpt2 and not package and data_args is not None and not data_args.get("tokenizer_path"):
            data_args["hf_tokenizer"] = data_args.get("hf_tokenizer") or gpt2
        if package and data_args is not None and not data_args.get("tokenizer_path"):
            tokenizer = Path(package) / TOKENIZER_FILE
            if not tokenizer.is_file():
                raise FileNotFoundError(f"model.init_from={package} is not a model package: {tokenizer} is missing")
            data_args["tokenizer_path"] = str(tokenizer)
        if config.model.get("extend_vocab") and data_args is not None:  # the data extends its tokenizer
            data_args["extend_vocab"] = config.model.get("extend_vocab")


def mirror_in_tensorboard(trainer) -> None:  # noqa: ANN001
    """A run logged by one CSVLogger (every config) is logged to TensorBoard too, in the same folder (same
    save_dir, name and version): one `trainer.logger.init_args.save_dir` still places the run, and
    `tensorboard --logdir <save_dir>/<name>` shows it. Configure a logger list (W&B, ...) to choose otherwise."""
    loggers = trainer.loggers
    if len(loggers) != 1 or type(loggers[0]) is not CSVLogger:
        return
    csv = loggers[0]
    tensorboard = TensorBoardLogger(csv.save_dir, name=csv.name, version=csv.version, default_hp_metric=False)
    trainer.loggers = [csv, tensorboard]  # the CSV logger first: trainer.log_dir stays its folder


def resolve_last_checkpoint(config) -> None:  # noqa: ANN001
    """`--ckpt_path last`: the newest last.ckpt of this config's runs; the resumed run logs into the same folder
    (`RunFolder` locks it and keeps the metrics logged before the resume as metrics.partN.csv)."""
    logger = config.trainer.get("logger")
    args = logger.get("init_args") if hasattr(logger, "get") else None
    if args is None or not args.get("save_dir"):
        return  # no logger folder to search: Lightning's own "last" lookup applies
    runs = Path(args["save_dir"]) / (args.get("name") or "lightning_logs")
    found = sorted(runs.glob("version_*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--ckpt_path last: no last.ckpt under {runs}/version_*/checkpoints")
    config.ckpt_path = str(found[-1])
    run_dir = found[-1].parent.parent
    version = run_dir.name.removeprefix("version_")
    args["version"] = int(version) if version.isdigit() else version


def trainer_cli(args: list[str] | None = None, run: bool = True) -> CaptionerCLI:
    """Build (and by default run) the LightningCLI; `args` replaces the command line."""
    # The command goes through sys.argv, not `args=`: Lightning's DDP launcher starts the other ranks by running
    # sys.argv again, so it must hold the whole command (and LightningCLI warns when both are given).
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
