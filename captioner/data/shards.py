"""webdataset tar shards as img2dataset writes them: KEY.jpg|png|webp + KEY.txt and/or KEY.json with the caption.

Reading streams shards with the `webdataset` package from a brace pattern (`data/{00000..00099}.tar`); every DDP
rank and every DataLoader worker reads different shards. Writing turns any readable `Pair`s into shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import webdataset as wds

from captioner.data.examples import make_example
from captioner.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, load_rgb
from captioner.data.sources import DataError, Pair
from captioner.preprocess import Transform

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def sample_captions(sample: dict[str, Any]) -> list[str]:
    """Captions of a shard sample: json "captions" (a list) or "caption", else the txt file."""
    if "json" in sample:
        meta = json.loads(sample["json"])
        if isinstance(meta.get("captions"), list):
            return [str(c) for c in meta["captions"]]
        if meta.get("caption"):
            return [str(meta["caption"])]
    if "txt" in sample:
        return [sample["txt"].decode("utf-8")]
    return []


def sample_image(sample: dict[str, Any]) -> bytes | None:
    for ext in IMAGE_EXTENSIONS:
        if ext in sample:
            return sample[ext]
    return None


def shard_dataset(
    urls: str,
    transform: Transform,
    train: bool,
    epoch_samples: int | None = None,
    shuffle_buffer: int = 1000,
    hflip_prob: float = 0.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> wds.WebDataset:
    """An IterableDataset of examples from the shards in `urls` (brace pattern or list).

    Args:
        epoch_samples: samples per epoch *per DataLoader worker and rank* (webdataset's `with_epoch`).
    """

    def to_example(sample: dict[str, Any]) -> dict[str, Any] | None:
        image, captions = sample_image(sample), [c for c in sample_captions(sample) if c.strip()]
        key = sample.get("__key__", "?")
        if image is None or not captions:
            return {"error": f"shard sample {key}: no image or no caption (keys {sorted(sample)})", "path": key}
        return make_example(image, captions, key, transform, train, hflip_prob, max_pixels)

    ds = wds.WebDataset(
        urls,
        shardshuffle=100 if train else False,
        nodesplitter=wds.split_by_node,
        workersplitter=wds.split_by_worker,
        handler=wds.warn_and_continue,
        empty_check=False,
        seed=seed,
    )
    if train and shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer)
    ds = ds.map(to_example)
    if epoch_samples:
        ds = ds.with_epoch(epoch_samples)
    return ds


def iter_shard_captions(urls: str, limit: int) -> Iterator[str]:
    """Captions of the first `limit` samples (for training a tokenizer)."""
    for captions in iter_shard_references(urls, limit):
        yield from captions


def iter_shard_references(urls: str, limit: int) -> Iterator[list[str]]:
    """The caption list of each of the first `limit` samples."""
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        if n >= limit:
            return
        yield list(sample_captions(sample))
        n += 1


def write_shards(
    pairs: list[Pair], pattern: str, max_count: int = 10_000, overwrite: bool = False
) -> tuple[list[str], list[str]]:
    """Write pairs as shards (`out/%05d.tar`): original image bytes, KEY.txt (first caption), KEY.json (all).
    Only files that decode as images are written; returns the shard paths and the reasons of the files left out."""
    if "%" not in pattern:
        raise DataError(f"shard pattern {pattern!r} needs a %d-style field, e.g. shards/%05d.tar")
    first = Path(pattern % 0)
    if first.exists() and not overwrite:
        raise FileExistsError(f"{first} exists; choose another pattern or pass --overwrite")
    first.parent.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    skipped: list[str] = []
    with wds.ShardWriter(pattern, maxcount=max_count, verbose=0) as sink:
        for i, pair in enumerate(pairs):
            path = Path(pair.image)
            ext = path.suffix.lower().lstrip(".") or "jpg"
            ext = "jpg" if ext == "jpeg" else ext
            if ext not in IMAGE_EXTENSIONS:
                raise DataError(f"{path}: shards hold jpg, png or webp images; convert this file first")
            data = path.read_bytes() if path.is_file() else b""
            try:
                load_rgb(data)  # what would be trained on: the very bytes written
            except ImageDecodeError as err:
                skipped.append(f"{path}: {str(err).removeprefix('<bytes>: ')}")
                continue
            sink.write(
                {
                    "__key__": f"{i:09d}",
                    ext: data,
                    "txt": pair.captions[0],
                    "json": json.dumps({"captions": pair.captions, "key": pair.key}, ensure_ascii=False),
                }
            )
        written = [pattern % n for n in range(sink.shard)]
    return written, skipped
