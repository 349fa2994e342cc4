"""The items of input shards, for recaptioning a dataset shard by shard: webdataset tars (read as
`captioner.data.shards` reads them for training, but a damaged tar raises instead of being skipped, so that the
shard can be retried and reported) and parquet files in img2dataset's layout (`key`, `jpg` or `image` bytes, or a
struct with `bytes`/`path` as Hugging Face writes images; `caption` and `url` optional), read batch by batch.

Each item keeps its key and, when the shard has one, its original caption. Shard names come from brace patterns
(`shards/{00000..00007}.tar`, webdataset's own `braceexpand`), globs or plain paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braceexpand import braceexpand

from captioner.data.shards import IMAGE_EXTENSIONS, sample_captions
from captioner.data.tables import DataError

SHARD_SUFFIXES = (".tar", ".parquet")
IMAGE_COLUMNS = ("jpg", "image", "png", "webp", "jpeg")  # the first one a parquet file has holds its images
PARQUET_BATCH = 256  # rows read at a time: a file is never read whole


@dataclass
class ShardItem:
    """One image of a shard: its bytes (or a file path), or the reason it has none."""

    key: str
    source: str  # the shard's path and the inner name: shards/00000.tar#000000001.jpg, data/0.parquet#12
    image: bytes | str | None = None  # bytes, or a path to read
    original_caption: str | None = None
    error: str | None = None
    members: dict[str, bytes] = field(default_factory=dict)  # a tar sample's members (for a webdataset output)


def looks_like_shards(inputs: list[str]) -> bool:
    """Whether every input names shards: .tar or .parquet files, or brace patterns / globs of them."""
    return bool(inputs) and all(i.lower().endswith(SHARD_SUFFIXES) for i in inputs)


def expand_shards(inputs: list[str]) -> list[str]:
    """Brace patterns, globs and paths -> shard paths, in order, each once; DataError for a pattern that matches
    nothing, a shard that does not exist, or a name that is not a .tar or .parquet file."""
    out: list[str] = []
    for item in inputs:
        names = list(braceexpand(item)) if "{" in item else [item]
        found: list[str] = []
        for name in names:
            if any(ch in name for ch in "*?[") and not os.path.exists(name):
                found.extend(sorted(glob.glob(name)))
            else:
                found.append(name)
        missing = [n for n in found if not os.path.isfile(n)]
        if not found or len(missing) == len(found):
            raise DataError(f"{item}: matches no shard file; check the folder and the pattern")
        if missing:
            raise DataError(f"{item}: {len(missing)} of its {len(found)} shards do not exist (first: {missing[0]})")
        out.extend(n for n in found if n not in out)
    bad = [n for n in out if not n.lower().endswith(SHARD_SUFFIXES)]
    if bad:
        raise DataError(f"{bad[0]}: not a shard; give .tar (webdataset) or .parquet files")
    return out


def image_column(path: str | Path) -> str:
    """The image column of a parquet file (from its schema alone); DataError listing its columns when it has none."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable parquet file ({err})") from err
    column = next((c for c in IMAGE_COLUMNS if c in names), None)
    if column is None:
        raise DataError(
            f"{path}: no image column (one of {', '.join(IMAGE_COLUMNS)}); its columns are {', '.join(names)}"
        )
    return column


def shard_items(path: str) -> Iterator[ShardItem]:
    """The items of one shard, in order; a damaged shard raises (OSError, ValueError or tarfile.TarError)."""
    yield from (_parquet_items if path.lower().endswith(".parquet") else _tar_items)(path)


def _tar_items(path: str) -> Iterator[ShardItem]:
    import webdataset as wds

    pipeline = wds.DataPipeline(wds.SimpleShardList([path]), wds.tarfile_to_samples(handler=wds.reraise_exception))
    for sample in pipeline:
        key = str(sample["__key__"])
        try:
            captions = sample_captions(sample)
        except ValueError:  # an unreadable .json/.txt: the image is still captioned, without its original
            captions = []
        original = captions[0] if captions else None
        members = {k: v for k, v in sample.items() if not k.startswith("__")}
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None:
            why = f"no image member (members {sorted(members)})"
            yield ShardItem(key, f"{path}#{key}", None, original, why, members)
        else:
            yield ShardItem(key, f"{path}#{key}.{ext}", sample[ext], original, None, members)


def _parquet_items(path: str) -> Iterator[ShardItem]:
    import pyarrow.parquet as pq

    column = image_column(path)
    with pq.ParquetFile(path) as file:
        names = file.schema_arrow.names
        wanted = [c for c in ("key", column, "caption") if c in names]
        row = 0
        for batch in file.iter_batches(batch_size=PARQUET_BATCH, columns=wanted):
            values = batch.to_pydict()
            for i in range(batch.num_rows):
                key = values["key"][i] if "key" in values and values["key"][i] is not None else f"{row:09d}"
                caption = values["caption"][i] if "caption" in values else None
                yield _parquet_item(path, row, str(key), values[column][i], caption)
                row += 1


def _parquet_item(path: str, row: int, key: str, value: Any, caption: Any) -> ShardItem:
    """A parquet row's image: bytes, a struct with `bytes` (or a `path`), or a path relative to the file's folder."""
    original = None if caption is None else str(caption)
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and value:
        value = str(Path(path).parent / value)
    if not isinstance(value, (bytes, str)) or not value:
        return ShardItem(key, f"{path}#{row}", None, original, "no image in this row")
    return ShardItem(key, f"{path}#{row}", value, original)
