"""`PairsDataModule`: your own image-caption pairs in any supported format, switched by one YAML key (`format`)."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

from captioner.data.base import CaptionDataModule
from captioner.data.examples import PairsDataset
from captioner.data.settings import Augment, Captions, Columns, ImageChecks, Split, Stream
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
        val: validation data in the same format; None takes `split.val_fraction` of `train` (imagefolder/table),
            `captions_val2017.json` beside a COCO train file, the `val` split of a Karpathy file. Required
            for webdataset.
        root: image folder. table: paths are relative to it (default: the table's folder); coco: default
            `<annotations>/../train2017` from the file name; karpathy: the folder holding `filepath/filename`.
        captions: caption lengths in tokens (`Captions`); columns: column names (`Columns`); split: validation
            data split off `train` (`Split`); images: what is refused or counted (`ImageChecks`); augment:
            training augmentation (`Augment`); stream: webdataset epochs and shuffling (`Stream`).
    """

    def __init__(
        self,
        format: Format = "imagefolder",
        train: str = "",
        val: str | None = None,
        root: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        captions: Captions | None = None,
        columns: Columns | None = None,
        split: Split | None = None,
        images: ImageChecks | None = None,
        augment: Augment | None = None,
        stream: Stream | None = None,
    ) -> None:
        self.images, self.augment = images or ImageChecks(), augment or Augment()
        super().__init__(batch_size, num_workers, captions, self.images.max_failure_rate)
        if not train:
            raise DataError("data.init_args.train is required: the training data path (folder, file or shard pattern)")
        if format == "webdataset" and not val:
            raise DataError("format webdataset needs data.init_args.val: a shard pattern for validation")
        self.format, self.train_path, self.val_path = format, train, val
        self.columns, self.split, self.stream = columns or Columns(), split or Split(), stream or Stream()
        c = self.columns
        self.source = DataSource(format, root, c.image, c.caption, self.images.allow_outside_root)
        if not 0 < self.split.val_fraction < 1:
            raise DataError(
                f"data.init_args.split.val_fraction={self.split.val_fraction}: the share of the training images kept "
                "for validation must lie between 0 and 1 (e.g. 0.05), or give validation data in data.init_args.val"
            )
        self._pairs: dict[str, list[Pair]] | None = None
        if format != "webdataset":
            self.pairs()  # read and check the metadata now: errors come before any training starts

    # ---- reading -----------------------------------------------------------------------------------------------
    def pairs(self) -> dict[str, list[Pair]]:
        if self._pairs is None:
            drop = self.images.drop_missing
            self._pairs = {k: clean(v, f"{self.format} {k} data", drop) for k, v in self._read().items()}
        return self._pairs

    def _read(self) -> dict[str, list[Pair]]:
        read = self.source.read
        if self.format == "karpathy":
            other = self.val_path or self.train_path
            return {
                "train": read(self.train_path, self.split.karpathy_train),
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
        return split_off(clean(train, f"{self.format} data", self.images.drop_missing), self.split.val_fraction)

    def training_texts(self) -> Iterator[str]:
        if self.format == "webdataset":  # read lazily: the caller stops after the captions it needs
            yield from iter_shard_captions(self.train_path, sys.maxsize)
            return
        for pair in self.pairs()["train"]:
            yield from pair.captions

    # ---- datasets ----------------------------------------------------------------------------------------------

    def training_references(self, limit: int) -> Iterator[list[str]]:
        if self.format == "webdataset":
            yield from iter_shard_references(self.train_path, limit)
            return
        yield from (list(pair.captions) for pair in self.pairs()["train"][:limit])

    def make_train_transform(self, preprocessing: Preprocessing) -> Transform:
        return preprocessing.train_transform(True) if self.augment.crop else self.transform

    def make_dataset(self, split: str, transform: Transform, train: bool) -> Dataset:
        flip, pixels, stream = self.augment.hflip if train else 0.0, self.images.max_pixels, self.stream
        if self.format == "webdataset":
            urls = self.train_path if train else self.val_path
            assert urls is not None  # __init__ requires val shards for webdataset
            per_worker = None
            if train and stream.epoch_samples:
                world = self.trainer.world_size if self.trainer is not None else 1
                per_worker = max(1, stream.epoch_samples // (world * max(1, self.num_workers)))
            return shard_dataset(
                urls, transform, train, per_worker, stream.shuffle_buffer if train else 0, flip, pixels
            )
        pairs = self.pairs()
        if split not in pairs:
            raise DataError(f"the {self.format} data has no {split!r} split")
        return PairsDataset(pairs[split], transform, train, flip, pixels)

    def setup(self, stage: str) -> None:
        if stage == "predict" or stage == "test":
            stage_split = "test" if "test" in self.pairs() else "val"
            self.datasets.setdefault("test", self.make_dataset(stage_split, self.transform, False))
            return
        super().setup(stage)

    def describe(self) -> dict[str, Any]:
        return {"source": self.format, "train": self.train_path, "val": self.val_path}


def split_off(pairs: list[Pair], fraction: float) -> dict[str, list[Pair]]:
    """Deterministic train/val split by a hash of each image's key."""
    if len(pairs) < 2:
        raise DataError(f"need at least 2 images to split off validation data, found {len(pairs)}; give val data")
    val = [p for p in pairs if zlib.crc32(p.key.encode()) % 10_000 < fraction * 10_000]
    if not val:
        val = pairs[-1:]
    keys = {p.key for p in val}
    return {"train": [p for p in pairs if p.key not in keys], "val": val}
