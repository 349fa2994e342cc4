"""Reading webdataset tar shards as img2dataset writes them: KEY.jpg|png|webp + KEY.txt and/or KEY.json with the
caption, streamed with the `webdataset` package from a brace pattern (`data/{00000..00099}.tar`); every DDP rank
and every DataLoader worker reads different shards.

Bad shards never stop a run by themselves: a sample whose members cannot be read (a .json that is not JSON or nests
too deep, a .txt that is not UTF-8, no image) becomes an error row naming the shard and the key, counted like a
broken image (training stops only past `max_failure_rate`); a damaged or truncated tar, or a member that appears
twice, is named once per shard (`ShardErrors`) and reading goes on.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import webdataset as wds

from captioner.data.examples import make_example
from captioner.data.images import DEFAULT_MAX_PIXELS
from captioner.preprocess import Transform

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def sample_captions(sample: dict[str, Any]) -> list[str]:
    """Captions of a shard sample: json "captions" (a list) or "caption", else the txt file; ValueError naming the
    member that cannot be read."""
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, a 100,000-digit number, nested too deep
            raise ValueError(f"its .json member is not readable JSON ({type(err).__name__})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"its .json member is a JSON {type(meta).__name__}, not an object")
        if isinstance(meta.get("captions"), list):
            return [str(c) for c in meta["captions"]]
        if meta.get("caption"):
            return [str(meta["caption"])]
    if "txt" in sample:
        try:
            return [sample["txt"].decode("utf-8")]
        except UnicodeDecodeError:
            raise ValueError("its .txt member is not UTF-8 text") from None
    return []


def sample_image(sample: dict[str, Any]) -> bytes | None:
    for ext in IMAGE_EXTENSIONS:
        if ext in sample:
            return sample[ext]
    return None


def sample_name(sample: dict[str, Any]) -> str:
    return f"shard {sample.get('__url__', '?')}, sample {sample.get('__key__', '?')!r}"


class ShardErrors:
    """webdataset's exception handler for what goes wrong below a sample: a tar that cannot be opened, is damaged or
    cut short, or holds a member twice. The first problem of each shard is named in a warning (webdataset's own
    handler prints the exception's raw argument tuple, without the shard, for every member); reading goes on.
    `track` is a pipeline stage that remembers the shard being opened, so that every message can name it."""

    def __init__(self) -> None:
        self.url = "?"
        self.named: set[str] = set()

    def track(self, shards: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for shard in shards:
            self.url = shard["url"]
            yield shard

    def __call__(self, exn: Exception) -> bool:
        if self.url not in self.named:
            self.named.add(self.url)
            reason = str(exn.args[0]) if exn.args else type(exn).__name__
            reason = re.sub(r" @ <.*>$", "", reason)  # webdataset appends the file object's repr
            warnings.warn(
                f"webdataset shard {self.url} is damaged or not a tar file ({type(exn).__name__}: {reason}); what "
                "could be read of it is used, the rest is skipped (further problems in it are not named)",
                stacklevel=2,
            )
        return True


def samples(urls: str | list[str], shuffle_shards: int = 0, seed: int = 0) -> wds.DataPipeline:
    """The raw samples ({"__key__", "__url__", "jpg", "txt", ...}) of the shards in `urls`, split over DDP ranks
    and DataLoader workers; shard order shuffled with a buffer of `shuffle_shards` (0: in order)."""
    errors = ShardErrors()
    stages: list[Any] = [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker]
    if shuffle_shards:
        stages.append(wds.shuffle(shuffle_shards, seed=seed))
    return wds.DataPipeline(*stages, errors.track, wds.tarfile_to_samples(handler=errors))


def shard_dataset(
    urls: str,
    transform: Transform,
    train: bool,
    epoch_samples: int | None = None,
    shuffle_buffer: int = 1000,
    hflip_prob: float = 0.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> wds.DataPipeline:
    """An IterableDataset of examples from the shards in `urls` (brace pattern or list).

    Args:
        epoch_samples: samples per epoch *per DataLoader worker and rank* (webdataset's `with_epoch`).
    """

    def to_example(sample: dict[str, Any]) -> dict[str, Any]:
        name = sample_name(sample)
        try:
            captions = [c for c in sample_captions(sample) if c.strip()]
        except ValueError as err:
            return {"error": f"{name}: {err}", "path": name}
        image = sample_image(sample)
        if image is None or not captions:
            keys = sorted(k for k in sample if not k.startswith("__"))
            return {"error": f"{name}: no image or no caption (members {keys})", "path": name}
        example = make_example(image, captions, sample.get("__key__", "?"), transform, train, hflip_prob, max_pixels)
        if "error" in example:
            example.update(error=example["error"].replace("<bytes>", name, 1), path=name)
        return example

    ds = samples(urls, shuffle_shards=100 if train else 0, seed=seed)
    if train and shuffle_buffer > 0:
        ds = ds.compose(wds.shuffle(shuffle_buffer))
    ds = ds.compose(wds.map(to_example))
    if epoch_samples:
        ds = ds.with_epoch(epoch_samples)
    return ds


def iter_shard_captions(urls: str, limit: int) -> Iterator[str]:
    """Captions of the first `limit` samples (for training a tokenizer)."""
    for captions in iter_shard_references(urls, limit):
        yield from captions


def iter_shard_references(urls: str, limit: int) -> Iterator[list[str]]:
    """The caption list of each of the first `limit` samples whose captions can be read (training counts and names
    the others)."""
    n = 0
    for sample in samples(urls):
        if n >= limit:
            return
        try:
            yield list(sample_captions(sample))
        except ValueError:
            continue
        n += 1
