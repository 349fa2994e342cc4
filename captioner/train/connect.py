"""Joining a module and its data explicitly (litgpt's `DataModule.connect`): each gets what it needs from the other,
and neither reaches into the trainer for it. The CLI calls `connect` after building both; do the same from Python
before `trainer.fit(module, datamodule)`."""

from __future__ import annotations

import lightning as L

from captioner.data.base import CaptionDataModule
from captioner.train.module import CaptionerModule


def connect(module: CaptionerModule, datamodule: CaptionDataModule, trainer: L.Trainer | None = None) -> None:
    """The data gets the model's preprocessing, block size and whether captions are padded (compiled training);
    the module gets the data's tokenizer (and, for self-critical training, its training references). With
    `module.feature_cache` set, `trainer` gets the callback that fills the cache before the first epoch."""
    model = module.model
    datamodule.connect(model.preprocessing, model.config.block_size, pad_to_max_length=module.compile)
    module.connect(datamodule.tokenizer)
    if module.self_critical is not None:  # CIDEr-D's document frequencies: the training references, read once
        module.self_critical.fit(datamodule.training_references)
    if module.feature_cache:
        if trainer is None:
            raise ValueError("model.feature_cache: pass the trainer to connect(module, datamodule, trainer)")
        from captioner.train.feature_cache import FillFeatureCache

        trainer.callbacks.append(FillFeatureCache(datamodule, module.feature_cache, module.feature_cache_dtype))
