"""Training throughput in the logs: Lightning's `ThroughputMonitor` fed with the project's FLOP count (`flops.py`):
images/s (`train|samples_per_sec`), caption tokens/s (`train|items_per_sec`), FLOPs/s and, on GPUs whose peak
Lightning knows (A100, H100, ...), MFU (`train|device/mfu`). A CPU has no known peak: no MFU there."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor

from captioner.flops import StepFlops, step_flops
from captioner.model import Captioner
from captioner.tokenizer import IGNORE_INDEX
from captioner.train.modes import eval_mode


def batch_images(batch: dict[str, Any]) -> int:
    return int(batch["input_ids"].size(0))


def batch_tokens(batch: dict[str, Any]) -> int:
    """Caption tokens that carry a loss (padding left out)."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


@runtime_checkable
class TrainsCaptioner(Protocol):
    """The module a `TrainingThroughput` measures: it trains a `Captioner` (a `CaptionerModule`)."""

    model: Captioner


class TrainingThroughput(ThroughputMonitor):
    """`ThroughputMonitor` for caption batches; each batch's FLOPs (its images and its caption length; a frozen
    encoder counted forward only, cached features not at all) are set on the module as Lightning expects.

    Args:
        window_size: batches averaged over (Lightning's `Throughput`); logged every `trainer.log_every_n_steps`.
    """

    def __init__(self, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=batch_images, length_fn=batch_tokens, window_size=window_size)
        self._image_tokens: tuple[int, int] | None = None
        self._flops: dict[int, StepFlops] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch is None:
            return
        if not isinstance(pl_module, TrainsCaptioner):
            raise TypeError(f"TrainingThroughput measures a module that trains a Captioner, not {type(pl_module)}")
        model = pl_module.model
        if self._image_tokens is None:
            # (1, N, D): the image tokens the decoder attends to; in eval mode, so that measuring moves no BatchNorm
            # statistics and draws no random numbers (a resumed run measures again and must train the same)
            with torch.no_grad(), eval_mode(model):
                shape = torch.zeros(1, *model.preprocessing.input_size, device=pl_module.device)
                self._image_tokens = (model.encode(shape).size(1), model.encoder.num_prefix_tokens)
        frozen = not any(p.requires_grad for p in model.encoder.backbone.parameters())
        T = batch["input_ids"].size(1)
        if T not in self._flops:  # counted once per caption length, not at every step
            self._flops[T] = step_flops(model, *self._image_tokens, T)
        flops = self._flops[T].training(batch_images(batch), frozen, "features" in batch)  # what Lightning reads
        pl_module.flops_per_batch = flops  # type: ignore[assignment]  # nn.Module's hint: tensors and modules only

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch is not None:  # a batch whose images all failed to decode is skipped
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
