"""DataModules: tokenization, batching and loaders shared by every caption source."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ParallelStrategy
from torch.utils.data import DataLoader, Dataset, IterableDataset

from captioner.data.resumable import ResumableDataLoader, example_index, example_rng
from captioner.data.shapes import IMAGE_SIZE, captions, make_scene, scene_objects
from captioner.data.transforms import Transform, eval_transform
from captioner.feature_cache import FeatureCache
from captioner.model import IGNORE_INDEX
from captioner.tokenizer import CaptionTokenizer


class DecodeFailures:
    """Counts examples whose image failed to decode; warns naming each, stops when too many fail.

    Each DataLoader worker holds its own copy, so the rate is checked per worker (each sees a random share).
    """

    def __init__(self, max_rate: float = 0.02, min_seen: int = 100) -> None:
        self.max_rate, self.min_seen = max_rate, min_seen
        self.seen, self.failed = 0, 0
        self.examples: list[str] = []

    def update(self, total: int, failures: list[dict[str, Any]]) -> None:
        self.seen += total
        self.failed += len(failures)
        for f in failures:
            warnings.warn(f"skipped an image that failed to decode: {f['error']}", stacklevel=2)
            if len(self.examples) < 5:
                self.examples.append(f["error"])
        if self.seen >= self.min_seen and self.failed > self.max_rate * self.seen:
            raise RuntimeError(
                f"{self.failed} of {self.seen} images failed to decode ({self.failed / self.seen:.1%} > "
                f"max_failure_rate {self.max_rate:.1%}), e.g. {self.examples}. Fix or remove these files, or raise "
                "data.init_args.max_failure_rate."
            )


class CaptionCollator:
    """List of examples -> batch {images (B,3,H,W), input_ids (B,T), labels (B,T), index, references, objects}.

    Examples from the feature cache carry `features` (B, N, C) instead of `images`. Examples whose image failed
    to decode (`{"error": ...}`) are left out and counted in `failures`. Captions are padded to the longest in
    the batch, or to `max_length` when `pad_to_max_length` (fixed shapes, so torch.compile does not recompile).
    """

    def __init__(
        self,
        tokenizer: CaptionTokenizer,
        max_length: int,
        failures: DecodeFailures | None = None,
        pad_to_max_length: bool = False,
    ) -> None:
        self.tokenizer, self.max_length, self.pad_to_max_length = tokenizer, max_length, pad_to_max_length
        self.failures = failures or DecodeFailures()

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        bad = [e for e in examples if "error" in e]
        self.failures.update(len(examples), bad)
        examples = [e for e in examples if "error" not in e]
        if not examples:
            return None  # the whole batch failed: the module skips it
        ids = [self.tokenizer.encode(e["caption"], self.max_length) for e in examples]
        T = self.max_length if self.pad_to_max_length else max(len(x) for x in ids)
        input_ids = torch.full((len(ids), T), self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full((len(ids), T), IGNORE_INDEX, dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(x)] = torch.tensor(x)  # aligned with input_ids; the shift happens in caption_loss
        key = "features" if "features" in examples[0] else "image"
        return {
            "features" if key == "features" else "images": torch.stack([e[key] for e in examples]),  # (B,3,H,W)|(B,N,C)
            "input_ids": input_ids,
            "labels": labels,
            "index": [e["index"] for e in examples],
            "references": [e["references"] for e in examples],
            "objects": [e.get("objects") for e in examples],
        }


class CaptionDataModule(L.LightningDataModule):
    """Base class: owns the tokenizer (trained on training captions, or loaded) and the loaders.

    Subclasses implement `training_texts()` and `make_dataset(split, transform, train)`.
    The image transform comes from the model's encoder (timm data config) when the trainer attaches it.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 1,
        max_length: int = 40,
        vocab_size: int = 512,
        tokenizer_path: str | None = None,
        crop_pct: float | None = None,
        max_failure_rate: float = 0.02,
        hf_tokenizer: str | None = None,
    ) -> None:
        super().__init__()
        self.hf_tokenizer = hf_tokenizer
        self.batch_size, self.num_workers, self.max_length = batch_size, num_workers, max_length
        self.max_failure_rate = max_failure_rate
        self.crop_pct = crop_pct
        self._vocab_target, self._tokenizer_path = vocab_size, tokenizer_path
        self._tokenizer: CaptionTokenizer | None = None
        self.transform: Transform | None = None
        self.train_transform: Transform | None = None
        self.datasets: dict[str, Dataset] = {}
        self.pad_to_max_length = False  # set by the module when it compiles (fixed caption shapes)

    # ---- tokenizer -----------------------------------------------------------------------------------------------
    def training_texts(self) -> Iterator[str]:
        raise NotImplementedError

    @property
    def tokenizer(self) -> CaptionTokenizer:
        if self._tokenizer is None:
            if self._tokenizer_path:
                self._tokenizer = CaptionTokenizer.load(Path(self._tokenizer_path))
            elif self.hf_tokenizer:
                self._tokenizer = CaptionTokenizer.from_hf(self.hf_tokenizer)
            else:
                self._tokenizer = CaptionTokenizer.train(self.training_texts(), vocab_size=self._vocab_target)
        return self._tokenizer

    def used_token_ids(self, limit: int = 50_000) -> list[int]:
        """Token ids that occur in (the first `limit`) training captions; stored in the exported package so that
        fine-tuning can tell learned embeddings from never-trained ones."""
        used: set[int] = set()
        for n, text in enumerate(self.training_texts()):
            used.update(self.tokenizer.encode(text))
            if n + 1 >= limit:
                break
        return sorted(used)

    @property
    def vocab_size(self) -> int:
        """Linked to the model's vocabulary size by the CLI."""
        return self.tokenizer.vocab_size

    # ---- datasets ------------------------------------------------------------------------------------------------
    def make_dataset(self, split: str, transform: Transform, train: bool) -> Dataset:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"source": type(self).__name__}

    def set_transform_from(self, data_config: dict[str, Any]) -> None:
        self.transform = eval_transform(data_config, crop_pct=self.crop_pct)
        self.train_transform = self.make_train_transform(data_config)

    def make_train_transform(self, data_config: dict[str, Any]) -> Transform:
        """The training transform; the evaluation one unless a subclass augments."""
        return self.transform

    def setup(self, stage: str) -> None:
        if self.transform is None:
            if self.trainer is None or self.trainer.lightning_module is None:
                raise RuntimeError("call set_transform_from(model.encoder.data_config()) before using the data alone")
            self.set_transform_from(self.trainer.lightning_module.model.encoder.data_config())
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}[stage]
        for split in splits:
            if split not in self.datasets:
                train = split == "train"
                transform = self.train_transform if train else self.transform
                self.datasets[split] = self.make_dataset(split, transform, train)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        kwargs = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "collate_fn": CaptionCollator(
                self.tokenizer, self.max_length, DecodeFailures(self.max_failure_rate), self.pad_to_max_length
            ),
            "persistent_workers": self.num_workers > 0,
        }
        if isinstance(dataset, IterableDataset):  # webdataset streams: not resumable mid-epoch
            return DataLoader(dataset, **kwargs)
        if self.trainer is not None and isinstance(self.trainer.strategy, ParallelStrategy):  # DDP, FSDP (any
            # number of devices): Lightning shards with its DistributedSampler; resuming restarts the epoch
            return DataLoader(dataset, shuffle=shuffle, drop_last=shuffle, **kwargs)
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything
        return ResumableDataLoader(dataset, shuffle=shuffle, seed=seed, drop_last=shuffle, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class ShapesDataset(Dataset):
    """Shapes scenes rendered on the fly; training examples draw one of the reference wordings at random."""

    def __init__(
        self, split: str, size: int, transform: Transform, train: bool, holdout: Sequence = (), max_objects: int = 3
    ) -> None:
        self.split, self.size, self.transform, self.train = split, size, transform, train
        self.holdout, self.max_objects = [tuple(p) for p in holdout], max_objects
        self.features: FeatureCache | None = None  # set by the feature cache: rows instead of images

    def __len__(self) -> int:
        return self.size

    def load_image(self, i: int) -> dict[str, Any]:
        return {"image": self.transform(make_scene(self.split, i, self.holdout, self.max_objects).image)}

    def cache_fingerprint(self) -> dict[str, Any]:
        return {"source": "shapes", "split": self.split, "size": self.size, "holdout": self.holdout,
                "max_objects": self.max_objects, "image_size": IMAGE_SIZE}  # fmt: skip

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i = example_index(key)
        if self.features is None:
            scene = make_scene(self.split, i, self.holdout, self.max_objects)
            objects, references, pixels = scene.objects, scene.captions, {"image": self.transform(scene.image)}
        else:  # cached patch tokens (N, C): the scene's objects and captions only, no image is drawn
            objects = scene_objects(self.split, i, self.holdout, self.max_objects)
            references, pixels = captions(objects), {"features": self.features.read(i)}
        return {
            **pixels,
            "caption": example_rng(key).choice(references) if self.train else references[0],
            "index": i,
            "references": references,
            "objects": [o.to_dict() for o in objects],
        }


class ShapesDataModule(CaptionDataModule):
    """The built-in shapes data: no files needed.

    Args:
        holdout_pairs: (colour, shape) pairs kept out of train/val/test; they make up the "novel" split.
    """

    def __init__(
        self,
        train_size: int = 50_000,
        val_size: int = 256,
        test_size: int = 500,
        novel_size: int = 200,
        holdout_pairs: list[tuple[str, str]] | None = None,
        batch_size: int = 64,
        num_workers: int = 1,
        max_length: int = 40,
        vocab_size: int = 384,
        tokenizer_path: str | None = None,
        tokenizer_scenes: int = 2000,
        hf_tokenizer: str | None = None,
        max_objects: int = 3,
    ) -> None:
        super().__init__(
            batch_size, num_workers, max_length, vocab_size, tokenizer_path, crop_pct=1.0, hf_tokenizer=hf_tokenizer
        )
        self.sizes = {"train": train_size, "val": val_size, "test": test_size, "novel": novel_size}
        self.holdout = [tuple(p) for p in holdout_pairs or []]
        self.tokenizer_scenes = tokenizer_scenes
        self.max_objects = max_objects

    def training_texts(self) -> Iterator[str]:

        for i in range(min(self.tokenizer_scenes, self.sizes["train"])):
            yield from captions(scene_objects("train", i, self.holdout, self.max_objects))

    def make_dataset(self, split: str, transform: Transform, train: bool) -> Dataset:
        return ShapesDataset(split, self.sizes[split], transform, train, self.holdout, self.max_objects)

    def describe(self) -> dict[str, Any]:
        """What the model was trained on (stored in the model package's training.json)."""
        return {
            "source": "shapes",
            "holdout_pairs": [list(p) for p in self.holdout],
            "train_size": self.sizes["train"],
            "max_objects": self.max_objects,
        }
