"""Cached encoder features: hit, miss, invalidation, and training on cached tokens equal to the online path."""

from __future__ import annotations

import pickle
from dataclasses import replace

import lightning as L
import pytest
import torch

from captioner.data import Captions
from captioner.data.examples import PairsDataset
from captioner.data.feature_cache import FAILED, STORED, FeatureCache
from captioner.data.pairs import Pair
from captioner.shapes import ShapesDataModule
from captioner.train import Speed
from captioner.train.feature_cache import cache_parts
from captioner.train.module import CaptionerModule
from captioner.train.settings import Finetuning
from tests.helpers import built, fit, tiny_module, tiny_shapes

# no model summary: its FLOPs count runs one forward pass (the backbone too) on the example input, not a training step
TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "limit_val_batches": 0,
    "enable_model_summary": False,
}


def _data() -> ShapesDataModule:
    return tiny_shapes(24)


def _module(cache, dtype: str = "float32", **kw) -> CaptionerModule:
    torch.manual_seed(0)
    return built(
        tiny_module(
            finetune=Finetuning(policy="freeze_encoder", **kw),
            speed=Speed(feature_cache=str(cache), feature_cache_dtype=dtype),
        )
    )


def _count_backbone_calls(module: CaptionerModule) -> list[int]:
    """Counts calls of the backbone's forward_features (what the encoder runs)."""
    calls, backbone = [0], module.model.encoder.backbone
    original = backbone.forward_features

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return original(x)

    backbone.forward_features = counted
    return calls


def test_rows_round_trip_and_survive_reopening(tmp_path):
    parts = {"encoder": "vit/x", "weights": "abc"}
    cache = FeatureCache.create(tmp_path, parts, rows=5, row_shape=(4, 3))
    assert cache.missing() == [0, 1, 2, 3, 4]
    feats = torch.randn(2, 4, 3)
    cache.write([3, 1], feats)
    cache.mark_failed([4])
    again = pickle.loads(pickle.dumps(FeatureCache.create(tmp_path, parts, rows=5, row_shape=(4, 3))))  # workers
    assert again.missing() == [0, 2]
    assert again.status()[[1, 3, 4]].tolist() == [STORED, STORED, FAILED]
    assert torch.equal(again.read(3), feats[0].to(torch.bfloat16))  # bf16 bits stored exactly
    assert again.read(3).dtype == torch.bfloat16
    assert again.read(4) is None
    with pytest.raises(KeyError, match="never filled"):
        again.read(0)


def test_miss_then_hit_and_training_never_runs_the_backbone(tmp_path):
    module, data = _module(tmp_path / "cache"), _data()
    calls = _count_backbone_calls(module)
    fit(L.Trainer(max_steps=3, **TRAINER, default_root_dir=tmp_path), module, data)
    (folder,) = (tmp_path / "cache").iterdir()
    cache = FeatureCache.open(folder)
    assert cache.missing() == [] and cache.shape[0] == 24
    filled = calls[0]
    assert filled == 1 + 3  # a shape probe + 3 batches of 8 images, once each; the 3 training steps add nothing

    module2, data2 = _module(tmp_path / "cache"), _data()  # same encoder weights, data, transform: a hit
    calls2 = _count_backbone_calls(module2)
    fit(L.Trainer(max_steps=3, **TRAINER, default_root_dir=tmp_path), module2, data2)
    assert calls2[0] == 1  # only the shape probe
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_any_key_part_change_invalidates(tmp_path):
    module, data = _module(tmp_path / "cache"), _data()
    fit(L.Trainer(max_steps=1, **TRAINER, default_root_dir=tmp_path), module, data)
    base = cache_parts(module, data, data.datasets["train"], "float32", "32-true")
    locations = {FeatureCache.location(tmp_path, base)}

    with torch.no_grad():  # other weights
        next(module.model.encoder.backbone.parameters()).add_(0.01)
    locations.add(
        FeatureCache.location(tmp_path, cache_parts(module, data, data.datasets["train"], "float32", "32-true"))
    )
    other = _data()  # another transform
    other.connect(module.tokenizer, replace(module.model.preprocessing, interpolation="bilinear"))
    locations.add(FeatureCache.location(tmp_path, {**base, "transform": repr(other.transform)}))
    bigger = ShapesDataModule(train_size=25).make_dataset("train", data.transform, True)  # other data
    locations.add(FeatureCache.location(tmp_path, {**base, "data": bigger.cache_fingerprint()}))
    locations.add(FeatureCache.location(tmp_path, {**base, "dtype": "bfloat16"}))
    locations.add(FeatureCache.location(tmp_path, {**base, "encoder": "vit_small_patch16_224"}))
    assert len(locations) == 6

    # a changed encoder gets a fresh cache (a miss), never the old rows
    module2, data2 = _module(tmp_path / "cache"), _data()
    with torch.no_grad():
        next(module2.model.encoder.backbone.parameters()).add_(0.01)
    calls = _count_backbone_calls(module2)
    fit(L.Trainer(max_steps=1, **TRAINER, default_root_dir=tmp_path), module2, data2)
    assert calls[0] == 1 + 3
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_image_files_are_part_of_the_key(tmp_path):
    from PIL import Image

    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(paths[-1])
    ds = PairsDataset([Pair(str(p), ["x"], p.name) for p in paths], transform=lambda im: im, train=True)
    before = ds.cache_fingerprint()
    Image.new("RGB", (9, 8), (0, 0, 0)).save(paths[1])  # the file is replaced
    assert ds.cache_fingerprint() != before


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-6), ("bfloat16", 2e-2)])
def test_cached_loss_equals_online_loss(tmp_path, dtype, tolerance):
    module, data = _module(tmp_path / "cache", dtype), _data()
    fit(L.Trainer(max_steps=1, **TRAINER, default_root_dir=tmp_path), module, data)
    cached_ds = data.datasets["train"]
    assert cached_ds.features is not None
    online = data.make_dataset("train", data.transform, True)
    collate = data.train_dataloader().collate_fn
    keys = [(0, i) for i in range(8)]  # same (epoch, index): same caption drawn
    cached_batch, online_batch = collate([cached_ds[k] for k in keys]), collate([online[k] for k in keys])
    assert "features" in cached_batch and "images" not in cached_batch
    assert torch.equal(cached_batch["input_ids"], online_batch["input_ids"])
    model = module.model.eval()
    with torch.no_grad():
        a = model.loss(None, cached_batch["input_ids"], cached_batch["labels"], cached_batch["features"])
        b = model.loss(online_batch["images"], online_batch["input_ids"], online_batch["labels"])
    assert abs(a.item() - b.item()) <= tolerance * abs(b.item())


def test_refuses_a_training_encoder_or_augmented_images(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(speed=Speed(feature_cache=str(tmp_path)))
    with pytest.raises(ValueError, match="finetune.policy=freeze_encoder"):
        fit(L.Trainer(max_steps=1, **TRAINER, default_root_dir=tmp_path), module, _data())

    class Augmented(ShapesDataModule):
        def make_train_transform(self, preprocessing):
            return lambda im: self.transform(im.rotate(5))

    augmented = Augmented(
        train_size=8, val_size=8, batch_size=8, num_workers=0, captions=Captions(max_length=24, truncate=True)
    )
    with pytest.raises(ValueError, match="unaugmented"):
        fit(L.Trainer(max_steps=1, **TRAINER, default_root_dir=tmp_path), _module(tmp_path), augmented)


def test_weights_digest_reads_batchnorm_counters():
    from torch import nn

    from captioner.data.feature_cache import weights_digest

    bn = nn.BatchNorm2d(4)  # its num_batches_tracked is a 0-dim int64 tensor
    before = weights_digest(bn)
    bn(torch.randn(2, 4, 3, 3))  # one training step moves the statistics and the counter
    assert weights_digest(bn) != before
