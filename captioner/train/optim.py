"""Optimisation: AdamW parameter groups (nanoGPT's `configure_optimizers`: no decay on norms, biases, embeddings),
layer-wise rates for the backbone, warmup + cosine schedule, and gradient clipping that also works with fused
AdamW and FSDP."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from captioner.model import Captioner
from captioner.train.settings import Optimizer


def parameter_groups(
    model: Captioner,
    weight_decay: float,
    lr: float,
    encoder_lr_mult: float = 1.0,
    encoder_layer_decay: float = 1.0,
    include_frozen_backbone: bool = False,
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices of Linear/Conv layers only (none on norms, biases, embeddings and
    position tokens); the timm backbone at `lr * encoder_lr_mult`, scaled per layer when `encoder_layer_decay`
    is below 1. Frozen parameters are left out, except the backbone's when it is frozen only for a while."""
    backbone = model.encoder.backbone
    in_backbone = {id(p) for p in backbone.parameters()}

    def wanted(p: nn.Parameter) -> bool:
        return p.requires_grad or (include_frozen_backbone and id(p) in in_backbone)

    groups = _decay_groups(model, weight_decay, lr, lambda p: wanted(p) and id(p) not in in_backbone)
    if encoder_layer_decay == 1.0:
        return groups + _decay_groups(backbone, weight_decay, lr * encoder_lr_mult, wanted)
    from timm.optim._param_groups import param_groups_layer_decay

    for g in param_groups_layer_decay(backbone, weight_decay, layer_decay=encoder_layer_decay):
        params = [p for p in g["params"] if wanted(p)]
        if params:
            scale = lr * encoder_lr_mult * g["lr_scale"]
            groups.append({"params": params, "weight_decay": g["weight_decay"], "lr": scale})
    return groups


def _decay_groups(
    module: nn.Module, weight_decay: float, lr: float, keep: Callable[[nn.Parameter], bool]
) -> list[dict[str, Any]]:
    matrices = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():  # parameters() yields tied weights once
        if keep(p):
            (decay if id(p) in matrices and id(p) not in embeddings else no_decay).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": lr} for ps, wd in ((decay, weight_decay), (no_decay, 0.0)) if ps]


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup to 1, then cosine to `min_ratio` at `total` steps."""

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def configure_adamw(
    module: L.LightningModule, model: Captioner, options: Optimizer, include_frozen_backbone: bool = False
) -> OptimizerLRSchedulerConfig:
    """Lightning's `configure_optimizers` result: AdamW over `parameter_groups`, warmup + cosine per step."""
    o = options
    groups = parameter_groups(
        model, o.weight_decay, o.lr, o.encoder_lr_mult, o.encoder_layer_decay, include_frozen_backbone
    )
    beta1, beta2 = o.betas
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(beta1, beta2), fused=use_fused(module))
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(o.warmup_steps, total, o.min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _fsdp(module: L.LightningModule) -> bool:
    return module._trainer is not None and "fsdp" in type(module._trainer.strategy).__name__.lower()


def use_fused(module: L.LightningModule) -> bool:
    """Fused AdamW on CUDA, except where it cannot be combined with gradient clipping: with a loss scaler
    (16-mixed: the fused step unscales inside) and under FSDP (sharded gradients need FSDP's own clipping)."""
    if module.device.type != "cuda" or not module.trainer.gradient_clip_val:
        return module.device.type == "cuda"
    return getattr(module.trainer.precision_plugin, "scaler", None) is None and not _fsdp(module)


@runtime_checkable
class ClipsShardedGradients(Protocol):
    """An FSDP-wrapped module: it clips the norm of its sharded gradients itself."""

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor: ...


def clip_gradients(
    module: L.LightningModule, optimizer: torch.optim.Optimizer, value: float | None, algorithm: str | None
) -> None:
    """Lightning refuses to clip for a fused optimizer because it might unscale inside; without a loss scaler
    (bf16-mixed, 32) the gradients are the true ones, so they are clipped here, as the unfused path would.
    Under FSDP the norm is taken by FSDP over the sharded gradients."""
    if value and _fsdp(module) and algorithm != "value":
        # Lightning clips FSDP gradients only by value (Lightning-AI/pytorch-lightning#19235); the norm of
        # sharded gradients needs the FSDP module's own clip_grad_norm_ (trainer.model is the wrapped module)
        wrapped = module.trainer.model
        if not isinstance(wrapped, ClipsShardedGradients):
            raise TypeError(f"{type(wrapped).__name__} (trainer.model under FSDP) has no clip_grad_norm_")
        wrapped.clip_grad_norm_(value)
        return
    if value and getattr(optimizer, "defaults", {}).get("fused"):
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, value)
        else:
            torch.nn.utils.clip_grad_norm_(params, value)
        return
    module.clip_gradients(optimizer, value, algorithm)


class NonFiniteSteps:
    """Counts training steps whose loss is NaN or infinite (the module skips them: no update); `max_in_a_row` of
    them in a row stop the run with what to try."""

    def __init__(self, max_in_a_row: int) -> None:
        self.max_in_a_row, self.skipped, self.in_a_row = max_in_a_row, 0, 0

    def finite(self, loss: torch.Tensor, step: int, lr: float) -> bool:
        if torch.isfinite(loss):
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise FloatingPointError(
                f"the loss was not finite for {self.in_a_row} steps in a row (last: step {step}, learning rate "
                f"{lr:.3g}). Try a lower optimizer.lr or more warmup_steps, gradient clipping "
                "(trainer.gradient_clip_val), "
                "precision 32 or bf16-mixed instead of 16-mixed, and check the data for empty or broken examples."
            )
        return False
