"""What the model says and where it looks, as training goes: at each validation, for a fixed set of validation
images, a captions grid and one cross-attention figure per image, logged as images and saved as PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from captioner.data.base import CaptionDataModule
from captioner.inference import caption_batch
from captioner.train.callbacks import datamodule_of
from captioner.train.module import CaptionerModule
from captioner.viz import attention_figure, caption_grid, cross_attention_maps, word_maps


class ValidationFigures(L.Callback):
    """At the end of each validation (not the sanity check), for the first `count` validation images (the same
    images every time): `val/captions`, a grid of each image with its caption and its first reference, and
    `val/attention/<i>`, a panel per generated word with its cross-attention over the image (as `captioner caption
    --attention-maps` draws). Logged through each logger's image API (TensorBoard `add_image`; W&B and others
    with `log_image`) and written to `<log_dir>/figures/step_<N>/`.

    Args:
        count: validation images shown (the first `count` of the validation set).
        layer: the cross-attention layer drawn (an index into the blocks that have one; -1: the last).
    """

    def __init__(self, count: int = 8, layer: int = -1) -> None:
        self.count, self.layer = count, layer
        self.written: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.count < 1:
            return
        log_dir = trainer.log_dir  # on every rank: a collective under DDP
        if not trainer.is_global_zero:
            return
        datamodule = datamodule_of(trainer)
        if not isinstance(pl_module, CaptionerModule) or not isinstance(datamodule, CaptionDataModule):
            raise TypeError("ValidationFigures draws a CaptionerModule's captions of a CaptionDataModule's images")
        examples = _first_examples(datamodule.datasets["val"], self.count)
        if not examples:
            return
        model, tokenizer = pl_module.built()
        images = torch.stack([e["image"] for e in examples]).to(pl_module.device)  # (B, 3, H, W)
        with trainer.precision_plugin.forward_context():  # as validation computes (a frozen LM held in bfloat16)
            captions = caption_batch(model, tokenizer, images)
        pictures = [model.preprocessing.to_image(e["image"]) for e in examples]
        figures = {
            "val/captions": caption_grid(pictures, [c.text for c in captions], [e["references"][0] for e in examples])
        }
        tokens = [c.tokens or [tokenizer.eos_id] for c in captions]
        with trainer.precision_plugin.forward_context():
            maps = cross_attention_maps(model, images, tokens, tokenizer.bos_id, self.layer)
        for i, (picture, c, m) in enumerate(zip(pictures, captions, maps, strict=True)):
            figures[f"val/attention/{i}"] = attention_figure(
                picture, word_maps(tokenizer, c.tokens, m) if c.tokens else []
            )
        step = trainer.global_step
        folder = Path(log_dir or trainer.default_root_dir) / "figures" / f"step_{step}"
        folder.mkdir(parents=True, exist_ok=True)
        for tag, figure in figures.items():
            path = folder / f"{tag.removeprefix('val/').replace('/', '_')}.png"
            figure.save(path)
            self.written.append(path)
            for logger in trainer.loggers:
                log_figure(logger, tag, figure, step)


def _first_examples(dataset: Any, count: int) -> list[dict[str, Any]]:
    """The first `count` examples that decoded (map-style data by index; a stream by iterating)."""
    out: list[dict[str, Any]] = []
    source = (dataset[i] for i in range(len(dataset))) if hasattr(dataset, "__len__") else iter(dataset)
    for example in source:
        if "image" in example:
            out.append(example)
        if len(out) == count:
            break
    return out


def log_figure(logger: Any, tag: str, figure: Image.Image, step: int) -> None:
    """An image through a Lightning logger: W&B (and others) `log_image`, TensorBoard `add_image`; else nothing."""
    if hasattr(logger, "log_image"):
        logger.log_image(key=tag, images=[figure], step=step)
    elif hasattr(getattr(logger, "experiment", None), "add_image"):
        logger.experiment.add_image(tag, np.asarray(figure.convert("RGB")), step, dataformats="HWC")
