"""The DataModule base: the loaders, and what `connect` hands over (the run's tokenizer, the model's transforms)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import lightning as L
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, IterableDataset

from captioner.data.collate import CaptionCollator, DecodeFailures
from captioner.data.feature_cache import Cacheable, FeatureCache
from captioner.data.resumable import ResumableDataLoader
from captioner.data.settings import Captions
from captioner.data.tables import DataError
from captioner.preprocess import Preprocessing, Transform
from captioner.tokenizer import CaptionTokenizer

T = TypeVar("T")


class LoaderOptions(TypedDict):
    """What every loader of a data module shares, whichever kind it is."""

    batch_size: int
    num_workers: int
    collate_fn: CaptionCollator
    persistent_workers: bool


class CaptionDataModule(L.LightningDataModule):
    """Base class: the loaders, and the checks of the captions under the run's tokenizer.

    Subclasses implement `training_texts()` and `make_dataset(split, transform, train)`. Before training, the
    training captions are measured under the tokenizer: when more than `captions.max_truncated` (1 %) would be cut
    at `captions.max_length` tokens, `fit` refuses, with the numbers and what to do, unless `captions.truncate`.

    Nothing here knows the model or decides the tokenizer: both are handed over by `connect` (the CLI does it after
    building both; litgpt's `DataModule.connect`), before `setup`. What the data offers the tokenizer is its
    training captions (`training_texts`).
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 1,
        captions: Captions | None = None,
        max_failure_rate: float = 0.02,
    ) -> None:
        super().__init__()
        self.captions = captions or Captions()
        self.batch_size, self.num_workers, self.max_length = batch_size, num_workers, self.captions.max_length
        self.max_failure_rate = max_failure_rate
        self._tokenizer: CaptionTokenizer | None = None
        self._transform: Transform | None = None
        self._train_transform: Transform | None = None
        self.datasets: dict[str, Dataset] = {}
        self.pad_to_max_length = False

    def connect(
        self,
        tokenizer: CaptionTokenizer,
        preprocessing: Preprocessing,
        block_size: int | None = None,
        pad_to_max_length: bool = False,
    ) -> None:
        """What the data is handed: the run's tokenizer (`train.vocabulary`), the model's image preprocessing (the
        transforms of every split come from it), its longest caption in tokens (`captions.max_length` must fit),
        and whether captions are padded to `max_length` (a compiled training step: fixed shapes, no recompiles)."""
        if block_size is not None and self.max_length > block_size:
            raise ValueError(
                f"data captions.max_length={self.max_length} is longer than the model's block_size={block_size}; "
                "lower data.init_args.captions.max_length or raise model.config.block_size"
            )
        self._tokenizer = tokenizer
        self.pad_to_max_length = pad_to_max_length
        self._transform = preprocessing.eval_transform()
        self._train_transform = self.make_train_transform(preprocessing)  # may use `transform`, set just before
        self.datasets = {}

    # ---- captions ------------------------------------------------------------------------------------------------
    def training_texts(self) -> Iterator[str]:
        """The training captions, in a fixed order (a tokenizer trained on them learns from the first ones)."""
        raise NotImplementedError

    def training_references(self, limit: int) -> Iterator[list[str]]:
        """The captions of the first `limit` training images, one list per image (CIDEr-D's document frequencies
        for self-critical training)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its training references")

    @property
    def tokenizer(self) -> CaptionTokenizer:
        return self._handed(self._tokenizer, "tokenizer")

    @property
    def transform(self) -> Transform:
        """The evaluation transform: the model's image preprocessing."""
        return self._handed(self._transform, "image transform")

    @property
    def train_transform(self) -> Transform:
        """The training transform (`make_train_transform`)."""
        return self._handed(self._train_transform, "training transform")

    def _handed(self, value: T | None, what: str) -> T:
        """What `connect` hands over, once it has."""
        if value is None:
            raise RuntimeError(
                f"{type(self).__name__} has no {what}: captioner.train.connect(module, datamodule) hands it over "
                "(the CLI does it)"
            )
        return value

    def check_caption_lengths(self, sample: int = 20_000) -> dict[str, float]:
        """The training captions (up to `sample`) measured in tokens, BOS and EOS included; refuses training when
        more than `max_truncated` of them would be cut at `max_length` (unless `truncate`)."""
        texts = list(itertools.islice(self.training_texts(), sample))
        if not texts:
            return {}
        lengths = self.tokenizer.lengths(texts)
        over = sum(n > self.max_length for n in lengths)
        c = self.captions
        found = {"measured": len(lengths), "longest": max(lengths), "truncated_share": over / len(lengths)}
        rank_zero_info(
            f"captions in tokens: longest {found['longest']} (BOS and EOS included), "
            f"{found['truncated_share']:.1%} of {len(lengths)} longer than captions.max_length={self.max_length}"
        )
        if found["truncated_share"] > c.max_truncated and not c.truncate:
            raise DataError(
                f"{over} of {len(lengths)} training captions ({found['truncated_share']:.1%}, more than "
                f"captions.max_truncated={c.max_truncated:.0%}) need more than captions.max_length={self.max_length} "
                f"tokens (the longest {found['longest']}) and would be cut: the model would learn to stop "
                "mid-sentence. Raise data.init_args.captions.max_length (and the model's block size: "
                "model.finetune.block_size when fine-tuning, model.config.block_size otherwise), add tokens learned "
                "from these captions (model.tokenizer.extend: N when fine-tuning), or set "
                "data.init_args.captions.truncate: true to train on them cut"
            )
        return found

    def used_token_ids(self, limit: int = 50_000) -> list[int]:
        """Token ids that occur in (the first `limit`) training captions; stored in the exported package so that
        fine-tuning can tell learned embeddings from never-trained ones."""
        used: set[int] = set()
        for n, text in enumerate(self.training_texts()):
            used.update(self.tokenizer.encode(text))
            if n + 1 >= limit:
                break
        return sorted(used)

    # ---- datasets ------------------------------------------------------------------------------------------------
    def make_dataset(self, split: str, transform: Transform, train: bool) -> Dataset:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"source": type(self).__name__}

    def score_captions(self, stage: str, rows: list[dict[str, Any]]) -> dict[str, float]:
        """The data's own scores of a validation or test epoch's captions (`stage` "val" or "test"; each row has
        the example's `index`, its `caption` and `references`), logged as `<stage>/<name>`; none by default.
        A task with ground truth beyond the references implements it (the shapes data: exact match)."""
        return {}

    def make_train_transform(self, preprocessing: Preprocessing) -> Transform:
        """The training transform; the evaluation one unless a subclass augments."""
        return self.transform

    # ---- the feature cache (filled by `captioner.train.feature_cache`) -------------------------------------------
    def cache_source(self) -> Cacheable:
        """The training data set, which the feature cache fills from (`images()`, `cache_fingerprint()`)."""
        dataset = self.datasets["train"]
        if not isinstance(dataset, Cacheable):
            raise ValueError(
                f"speed.feature_cache: {type(dataset).__name__} cannot be cached (webdataset shards stream without "
                "row numbers); use the imagefolder, table, coco, karpathy or shapes formats, or unset "
                "model.speed.feature_cache"
            )
        return dataset

    def use_feature_cache(self, path: str | Path) -> None:
        """Training examples carry cached patch tokens from the cache at `path` instead of images."""
        self.cache_source().features = FeatureCache.open(path)

    def setup(self, stage: str) -> None:
        transform, train_transform = self.transform, self.train_transform  # these raise before `connect`
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}[stage]
        if stage == "fit" and "train" not in self.datasets:
            self.check_caption_lengths()
        for split in splits:
            if split not in self.datasets:
                train = split == "train"
                self.datasets[split] = self.make_dataset(split, train_transform if train else transform, train)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        share = len(dataset) // max(1, self.num_workers) if hasattr(dataset, "__len__") else 100  # per worker
        failures = DecodeFailures(self.max_failure_rate, min_seen=max(1, min(100, share)))
        kwargs = LoaderOptions(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=CaptionCollator(self.tokenizer, self.max_length, failures, self.pad_to_max_length),
            persistent_workers=self.num_workers > 0,
        )
        if isinstance(dataset, IterableDataset):  # webdataset streams: not resumable mid-epoch
            return DataLoader(dataset, **kwargs)
        if self.trainer is not None and isinstance(self.trainer.strategy, ParallelStrategy):  # DDP, FSDP (any
            # number of devices): Lightning shards with its DistributedSampler; resuming restarts the epoch
            return DataLoader(dataset, shuffle=shuffle, drop_last=shuffle, **kwargs)
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything
        return ResumableDataLoader(dataset, shuffle=shuffle, seed=seed, drop_last=shuffle, **kwargs)

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        ranks = self.trainer.world_size if self.trainer is not None else 1
        if hasattr(dataset, "__len__") and len(dataset) // ranks < self.batch_size:  # the last batch is dropped
            raise DataError(
                f"{len(dataset)} training examples{f' ({len(dataset) // ranks} per device)' if ranks > 1 else ''} "
                f"make no whole batch of data.init_args.batch_size={self.batch_size} (an incomplete last batch is "
                "dropped), so nothing would train; lower the batch size or add examples"
            )
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
