"""How a training run makes its package, as its training.json records it (`CaptionerModule.provenance`): the
objective, the package it started from and the optimiser's settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from captioner.hub import locate_package
from captioner.package import Objective, Origin
from captioner.train.scst import REWARD, SelfCritical
from captioner.train.settings import Finetuning, Optimizer


def provenance(
    optimizer: Optimizer, finetuning: Finetuning, started_from: Origin | None, self_critical: SelfCritical | None
) -> dict[str, Any]:
    """training.json's `objective`, `started_from` and `optimizer` (as JSON): AdamW, warm-up then cosine
    (`train.optim.configure_adamw`), and which parameters train (`train.build.apply_finetune_policy`)."""
    settings = {k: _plain(v) for k, v in asdict(optimizer).items() if k != "max_nonfinite_steps"}
    return {
        "objective": objective(self_critical).to_dict(),
        "started_from": started_from.to_dict() if started_from else None,
        "optimizer": {
            **settings,
            "encoder_frozen_epochs": finetuning.encoder_frozen_epochs,
            "finetune": finetuning.policy,
            **({"freeze_lm": True} if finetuning.freeze_lm else {}),
            **({"lora": asdict(finetuning.lora)} if finetuning.lora.groups else {}),
        },
    }


def objective(self_critical: SelfCritical | None) -> Objective:
    if self_critical is None:
        return Objective("cross_entropy")
    options = self_critical.options
    return Objective("scst", reward=REWARD, baseline=options.baseline, samples=options.samples)


def start(init_from: str) -> Origin:
    """Where the package named `init_from` came from (a repo id not downloaded yet is looked up in the cache)."""
    return Origin.of(init_from) if Path(init_from).exists() else locate_package(init_from).origin


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
