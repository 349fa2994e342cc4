"""Filling the feature cache of a training run (`model.speed.feature_cache`) before its first epoch, as a callback that
`train.connect` installs.

Data sets that can be cached implement `images()` (a data set of {"index", "image"} or {"index", "error"} per
row), `cache_fingerprint()` (what identifies their images) and read `self.features` in `__getitem__`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.data.base import CaptionDataModule
from captioner.data.feature_cache import FeatureCache, weights_digest
from captioner.train.modes import eval_mode

log = logging.getLogger(__name__)


def fill(
    cache: FeatureCache,
    images: Any,
    encode: Callable[[torch.Tensor], torch.Tensor],
    rows: Sequence[int],
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> int:
    """Encode `rows` of `images` (a data set of {"index", "image" | "error"}) with `encode` ((B, 3, H, W) ->
    (B, N, C)) and store them; returns how many failed to decode (their rows are marked failed and the training
    data set skips them)."""
    subset = torch.utils.data.Subset(images, list(rows))
    loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    failed = 0
    for items in tqdm(loader, desc="encoding images into the feature cache", disable=not progress, unit="batch"):
        bad = [it["index"] for it in items if "error" in it]
        if bad:
            cache.mark_failed(bad)
            failed += len(bad)
        good = [it for it in items if "error" not in it]
        if good:
            with torch.no_grad():
                feats = encode(torch.stack([it["image"] for it in good]).to(device))  # (B, N, C)
            cache.write([it["index"] for it in good], feats)
    return failed


def cache_parts(module: Any, datamodule: Any, dataset: Any, dtype: str, precision: str) -> dict[str, Any]:
    """Everything the cached tokens depend on (the cache key)."""
    cfg = module.model.config
    return {
        "encoder": cfg.encoder_name,
        "architecture": {
            "img_size": cfg.encoder_img_size,
            "patch_size": cfg.encoder_patch_size,
            "kwargs": cfg.encoder_kwargs,
            "conv_stem": cfg.encoder_conv_stem,
        },
        "weights": weights_digest(module.model.encoder.backbone),
        "transform": repr(datamodule.transform),
        "data": dataset.cache_fingerprint(),
        "precision": precision,
        "dtype": dtype,
    }


def check_cacheable(module: Any, datamodule: Any, dataset: Any) -> None:
    """Refuse a cache that would hand out stale or wrong tokens, saying what to change."""
    trainable = [n for n, p in module.model.encoder.backbone.named_parameters() if p.requires_grad]
    frozen_epochs = module.finetuning.encoder_frozen_epochs
    if trainable or frozen_epochs > 0:
        raise ValueError(
            "speed.feature_cache needs an encoder that never trains: set finetune.policy=freeze_encoder and "
            f"finetune.encoder_frozen_epochs=0 (trainable backbone parameters: {trainable[:3] or 'none'}, "
            f"encoder_frozen_epochs={frozen_epochs})"
        )
    if datamodule.train_transform is not datamodule.transform or getattr(dataset, "hflip_prob", 0.0) > 0:
        raise ValueError(
            "speed.feature_cache needs unaugmented images (each epoch would see different pixels): set the data's "
            "augment.crop=false and augment.hflip=0, or unset speed.feature_cache"
        )


class FillFeatureCache(L.Callback):
    """Before the first epoch: open (or create) the cache of the run's training set, fill its missing rows split
    over the ranks, and point the training data at it."""

    def __init__(self, datamodule: CaptionDataModule, root: str, dtype: str = "bfloat16") -> None:
        self.datamodule, self.root, self.dtype = datamodule, root, dtype
        self.cache: FeatureCache | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.cache = prepare(trainer, pl_module, self.datamodule, self.root, self.dtype)


def prepare(trainer: L.Trainer, module: Any, datamodule: CaptionDataModule, root: str, dtype: str) -> FeatureCache:
    dataset = datamodule.cache_source()
    check_cacheable(module, datamodule, dataset)
    encoder = module.model.encoder
    strategy = trainer.strategy

    def encode(images: torch.Tensor) -> torch.Tensor:
        # eval mode: a frozen encoder's features as training would see them, BatchNorm statistics untouched
        with trainer.precision_plugin.forward_context(), eval_mode(encoder):
            return encoder.patch_tokens(images)  # (B, N, C)

    size = module.model.preprocessing.input_size
    with torch.no_grad():
        row_shape = encode(torch.zeros(1, *size, device=module.device)).shape[1:]
    parts = cache_parts(module, datamodule, dataset, dtype, str(trainer.precision))
    if trainer.is_global_zero:
        cache = FeatureCache.create(root, parts, len(dataset), row_shape, dtype)
    strategy.barrier("feature_cache_created")
    if not trainer.is_global_zero:
        cache = FeatureCache.create(root, parts, len(dataset), row_shape, dtype)  # opens what rank 0 made
    missing = cache.missing()
    if trainer.is_global_zero:
        log.info("feature cache %s: %d of %d rows to encode", cache.path, len(missing), len(dataset))
        if missing:
            print(f"feature cache {cache.path}: encoding {len(missing)} of {len(dataset)} images once")
        else:
            print(f"feature cache {cache.path}: all {len(dataset)} rows found, no image is encoded")
    mine = missing[trainer.global_rank :: trainer.world_size]
    failed = fill(
        cache,
        dataset.images(),
        encode,
        mine,
        module.device,
        datamodule.batch_size,
        datamodule.num_workers,
        progress=trainer.is_global_zero and bool(mine),
    )
    if failed:
        log.warning("feature cache: %d images failed to decode and are skipped in training", failed)
    strategy.barrier("feature_cache_filled")
    datamodule.use_feature_cache(cache.path)  # fresh read-only maps (also in the DataLoader workers)
    return cache
