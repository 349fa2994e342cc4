"""How a training run makes its package, as its training.json records it (`CaptionerModule.provenance`): the
objective, the package it started from and the optimiser's settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captioner.hub import locate_package
from captioner.package import Objective, Origin
from captioner.train.scst import REWARD, SelfCritical

# the module's arguments that decide the optimisation: AdamW, warm-up then cosine (train.optim.configure_adamw),
# and which parameters train (train.build.apply_finetune_policy)
OPTIMIZER_FIELDS = ("lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "encoder_lr_mult",
                    "encoder_layer_decay", "encoder_frozen_epochs", "finetune")  # fmt: skip


def provenance(hparams: Mapping[str, Any], self_critical: SelfCritical | None) -> dict[str, Any]:
    """training.json's `objective`, `started_from` and `optimizer` (as JSON) of a module with these
    hyperparameters; `init_from`, a folder here (a Hub download is a cache snapshot: its repo and commit) or a Hub
    repo id."""
    init_from = hparams.get("init_from")
    return {
        "objective": objective(self_critical).to_dict(),
        "started_from": start(init_from).to_dict() if init_from else None,
        "optimizer": {k: _plain(hparams[k]) for k in OPTIMIZER_FIELDS if k in hparams},
    }


def objective(self_critical: SelfCritical | None) -> Objective:
    if self_critical is None:
        return Objective("cross_entropy")
    options = self_critical.options
    return Objective("scst", reward=REWARD, baseline=options.baseline, samples=options.samples)


def start(init_from: str) -> Origin:
    """Where the package named `init_from` came from (a repo id not downloaded yet is looked up in the cache)."""
    return Origin.of(init_from) if Path(init_from).exists() else locate_package(init_from).origin


def _plain(value: Any) -> Any:  # noqa: ANN401
    return list(value) if isinstance(value, tuple) else value
