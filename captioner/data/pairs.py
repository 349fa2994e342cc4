"""`PairsDataModule`: your own image-caption pairs in any supported format, switched by one YAML key (`format`)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

from captioner.data.base import CaptionDataModule
from captioner.data.examples import PairsDataset
from captioner.data.images import DEFAULT_MAX_PIXELS
from captioner.data.shards import iter_shard_captions, iter_shard_references, shard_dataset
from captioner.data.sources import DataError, DataSource, Pair, clean, coco_image_dir
from captioner.preprocess import Preprocessing, Transform

Format = Literal["imagefolder", "table", "coco", "karpathy", "webdataset"]


class PairsDataModule(CaptionDataModule):
    """Image-caption pairs from files.

    Args:
        format: `imagefolder` (folder with metadata.jsonl/csv), `table` (a .jsonl/.csv of image path + caption),
            `coco` (captions_*.json), `karpathy` (dataset_coco.json / dataset_flickr8k.json / ...),
            `webdataset` (tar shards, brace pattern).
        train: the training data: a folder (imagefolder), a table file, a COCO annotation file, a Karpathy split
            file, or a shard pattern.
        val: validation data in the same format; None takes `val_fraction` of `train` (imagefolder/table),
            `captions_val2017.json` beside a COCO train file, the `val` split of a Karpathy file. Required
            for webdataset.
        root: image folder. table: paths are relative to it (default: the table's folder); coco: default
            `<annotations>/../train2017` from the file name; karpathy: the folder holding `filepath/filename`.
        image_column, caption_column: column names (table; imagefolder uses `file_name` + caption_column).
        drop_missing: skip images named in the metadata but missing on disk (default: one error before training).
        allow_outside_root: train on image paths that resolve outside the data root (`..`, absolute paths,
            symbolic links); by default they are refused before training, with a count and examples.
        max_failure_rate: images failing to decode are skipped and counted; above this rate training stops.
        augment: timm's training transform (random resized crop at scale 0.8-1, no colour jitter, no flip);
            off by default because crops can cut away what a caption names.
        hflip: probability of a horizontal flip, with "left"/"right" swapped in the captions.
        epoch_samples: webdataset: samples per epoch per rank and worker.
        tokenizer_path: a tokenizer.json to use instead of training a BPE (fine-tuning sets it from the package).
        hf_tokenizer: a Hugging Face tokenizer (hub name or folder) to use instead of training a BPE (set from
            `model.config.decoder_init_from` when a GPT-2 decoder is used).
        truncate: train on captions longer than `max_length` tokens, cut (EOS kept). By default `fit` measures the
            training captions under the tokenizer first and refuses when more than `max_truncated` (1 %) are.
        extend_vocab: tokens to add to the loaded tokenizer, learned from the training captions (set from
            `model.extend_vocab` by the CLI when fine-tuning).
    """

    def __init__(
        self,
        format: Format = "imagefolder",
        train: str = "",
        val: str | None = None,
        root: str | None = None,
        image_column: str = "file_name",
        caption_column: str = "text",
        karpathy_train_splits: list[str] | None = None,
        val_fraction: float = 0.05,
        drop_missing: bool = False,
        allow_outside_root: bool = False,
        max_failure_rate: float = 0.02,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        augment: bool = False,
        hflip: float = 0.0,
        epoch_samples: int | None = None,
        shuffle_buffer: int = 1000,
        batch_size: int = 32,
        num_workers: int = 2,
        max_length: int = 40,
        vocab_size: int = 4096,
        tokenizer_path: str | None = None,
        hf_tokenizer: str | None = None,
        tokenizer_captions: int = 100_000,
        truncate: bool = False,
        max_truncated: float = 0.01,
        extend_vocab: int = 0,
    ) -> None:
        super().__init__(
            batch_size, num_workers, max_length, vocab_size, tokenizer_path, max_failure_rate, hf_tokenizer,
            truncate, max_truncated, extend_vocab,
        )  # fmt: skip
        if not train:
            raise DataError("data.init_args.train is required: the training data path (folder, file or shard pattern)")
        if format == "webdataset" and not val:
            raise DataError("format webdataset needs data.init_args.val: a shard pattern for validation")
        self.format, self.train_path, self.val_path = format, train, val
        self.source = DataSource(format, root, image_column, caption_column, allow_outside_root)
        self.karpathy_train_splits = karpathy_train_splits or ["train", "restval"]
        if not 0 < val_fraction < 1:
            raise DataError(
                f"data.init_args.val_fraction={val_fraction}: the share of the training images kept for validation "
                "must lie between 0 and 1 (e.g. 0.05), or give validation data in data.init_args.val"
            )
        self.val_fraction, self.drop_missing = val_fraction, drop_missing
        self.max_image_pixels, self.augment, self.hflip = max_image_pixels, augment, hflip
        self.epoch_samples, self.shuffle_buffer = epoch_samples, shuffle_buffer
        self.tokenizer_captions = tokenizer_captions
        self._pairs: dict[str, list[Pair]] | None = None
        if format != "webdataset":
            self.pairs()  # read and check the metadata now: errors come before any training starts

    # ---- reading -----------------------------------------------------------------------------------------------
    def pairs(self) -> dict[str, list[Pair]]:
        if self._pairs is None:
            self._pairs = {k: clean(v, f"{self.format} {k} data", self.drop_missing) for k, v in self._read().items()}
        return self._pairs

    def _read(self) -> dict[str, list[Pair]]:
        read = self.source.read
        if self.format == "karpathy":
            other = self.val_path or self.train_path
            return {
                "train": read(self.train_path, self.karpathy_train_splits),
                "val": read(other, ["val"]),
                "test": read(other, ["test"]),
            }
        train = read(self.train_path)
        if self.val_path:
            return {"train": train, "val": read(self.val_path)}
        if self.format == "coco":
            val_file = Path(self.train_path).with_name(Path(self.train_path).name.replace("train", "val"))
            if val_file != Path(self.train_path) and val_file.is_file():
                val_source = DataSource(
                    "coco", coco_image_dir(val_file), allow_outside_root=self.source.allow_outside_root
                )
                return {"train": train, "val": val_source.read(str(val_file))}
        return split_off(clean(train, f"{self.format} data", self.drop_missing), self.val_fraction)

    def training_texts(self) -> Iterator[str]:
        if self.format == "webdataset":
            yield from iter_shard_captions(self.train_path, self.tokenizer_captions)
            return
        n = 0
        for pair in self.pairs()["train"]:
            for c in pair.captions:
                yield c
                n += 1
            if n >= self.tokenizer_captions:
                return

    # ---- datasets ----------------------------------------------------------------------------------------------

    def training_references(self, limit: int) -> Iterator[list[str]]:
        if self.format == "webdataset":
            yield from iter_shard_references(self.train_path, limit)
            return
        yield from (list(pair.captions) for pair in self.pairs()["train"][:limit])

    def make_train_transform(self, preprocessing: Preprocessing) -> Transform:
        return preprocessing.train_transform(self.augment) if self.augment else self.transform

    def make_dataset(self, split: str, transform: Transform, train: bool) -> Dataset:
        flip = self.hflip if train else 0.0
        if self.format == "webdataset":
            urls = self.train_path if train else self.val_path
            per_worker = None
            if train and self.epoch_samples:
                world = self.trainer.world_size if self.trainer is not None else 1
                per_worker = max(1, self.epoch_samples // (world * max(1, self.num_workers)))
            return shard_dataset(
                urls, transform, train, per_worker, self.shuffle_buffer if train else 0, flip, self.max_image_pixels
            )
        pairs = self.pairs()
        if split not in pairs:
            raise DataError(f"the {self.format} data has no {split!r} split")
        return PairsDataset(pairs[split], transform, train, flip, self.max_image_pixels)

    def setup(self, stage: str) -> None:
        if stage == "predict" or stage == "test":
            stage_split = "test" if "test" in self.pairs() else "val"
            if self.transform is None:
                super().setup("validate")
            self.datasets.setdefault("test", self.make_dataset(stage_split, self.transform, False))
            return
        super().setup(stage)

    def describe(self) -> dict[str, Any]:
        return {"source": self.format, "train": self.train_path, "val": self.val_path}


def split_off(pairs: list[Pair], fraction: float) -> dict[str, list[Pair]]:
    """Deterministic train/val split by a hash of each image's key."""
    if len(pairs) < 2:
        raise DataError(f"need at least 2 images to split off validation data, found {len(pairs)}; pass data.val")
    val = [p for p in pairs if zlib.crc32(p.key.encode()) % 10_000 < fraction * 10_000]
    if not val:
        val = pairs[-1:]
    keys = {p.key for p in val}
    return {"train": [p for p in pairs if p.key not in keys], "val": val}
