"""Joining a module and its data, in one direction (litgpt's `DataModule.connect`): the run's tokenizer is resolved
once, the model is built from it, and the data receives the tokenizer and what it needs of the model. The CLI
calls `connect` after building both; do the same from Python before `trainer.fit(module, datamodule)`."""

from __future__ import annotations

import lightning as L

from captioner.data.base import CaptionDataModule
from captioner.train.callbacks import callbacks_of
from captioner.train.module import CaptionerModule
from captioner.train.vocabulary import resolve_tokenizer


def connect(module: CaptionerModule, datamodule: CaptionDataModule, trainer: L.Trainer | None = None) -> None:
    """Resolve the tokenizer (`module.tokenizer_source`, the start package or language model, the data's training
    captions), build the module's model sized from it, then hand the data the tokenizer, the model's
    preprocessing, block size and whether captions are padded (compiled training). Self-critical training gets the
    data's training references; with `speed.feature_cache` set, `trainer` gets the callback that fills the cache
    before the first epoch."""
    if module.tokenizer is None:
        source, package = module.tokenizer_source, module.start_package()
        module.connect(resolve_tokenizer(source, package, module.architecture, datamodule.training_texts))
    model, tokenizer = module.built()
    datamodule.connect(tokenizer, model.preprocessing, model.config.block_size, pad_to_max_length=module.speed.compile)
    module.data_scores = datamodule.score_captions  # what validation logs besides the caption metrics
    if module.self_critical is not None:  # CIDEr-D's document frequencies: the training references, read once
        module.self_critical.fit(datamodule.training_references)
    speed = module.speed
    if speed.feature_cache:
        if trainer is None:
            raise ValueError("speed.feature_cache: pass the trainer to connect(module, datamodule, trainer)")
        from captioner.train.feature_cache import FillFeatureCache

        callbacks_of(trainer).append(FillFeatureCache(datamodule, speed.feature_cache, speed.feature_cache_dtype))
