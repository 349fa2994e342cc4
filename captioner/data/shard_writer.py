"""Writing webdataset tar shards (`captioner shards`) from any readable `Pair`s: every shard name checked before the
first byte is written, each shard written under a temporary name and renamed into place when complete."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import webdataset as wds

from captioner.data.images import ImageDecodeError, load_rgb
from captioner.data.shards import IMAGE_EXTENSIONS
from captioner.data.sources import DataError, Pair
from captioner.outputs import check_apart

FIELD = re.compile(r"%(?:%|0?[1-9]?\d*d)")  # printf fields a pattern may hold: %% and one %d, %5d or %05d


def shard_names(pattern: str, count: int) -> list[str]:
    """The first `count` file names of a shard pattern (`out/%05d.tar`), after checking the pattern: exactly one
    integer field, in the file name (not in a folder), no other printf field; a bad pattern is a DataError."""
    fields = FIELD.findall(pattern)
    numbers = [f for f in fields if f != "%%"]
    if pattern.count("%") != 2 * fields.count("%%") + len(numbers) or len(numbers) != 1:
        raise DataError(
            f"shard pattern {pattern!r} needs exactly one %d-style field (%d, %05d) and no other % (write %% for a "
            "percent sign), e.g. shards/%05d.tar"
        )
    if any(f != "%%" for f in FIELD.findall(os.path.dirname(pattern))):
        raise DataError(f"shard pattern {pattern!r}: the %d field belongs in the file name, not in a folder name")
    return [pattern % n for n in range(count)]


def write_shards(
    pairs: list[Pair],
    pattern: str,
    max_count: int = 10_000,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
) -> tuple[list[str], list[str]]:
    """Write pairs as shards (`out/%05d.tar`): original image bytes, KEY.txt (first caption), KEY.json (all).
    Only files that decode as images are written; returns the shard paths and the reasons of the files left out.

    Every name the shards could take is checked before anything is written: none may exist without `overwrite`,
    none may be an image read or lie inside one of `inputs` (the data's folders and files). Each shard is written
    under a temporary name and renamed into place when it is complete, so a failed run leaves no half shard."""
    names = shard_names(pattern, max(1, -(-len(pairs) // max_count)))
    check_apart(names, [*inputs, *(p.image for p in pairs)], "the shard")
    taken = [n for n in names if os.path.lexists(n)]
    if taken and not overwrite:
        raise FileExistsError(
            f"{len(taken)} of the shard names to write exist already ({', '.join(taken[:3])}); choose another "
            "pattern or pass overwrite=True"
        )
    folder = Path(names[0]).parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".shards.", dir=folder))
    done: list[str] = []

    def finished(path: str) -> None:  # ShardWriter's `post`: a complete shard takes its final name
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(path, names[len(done)])
        done.append(names[len(done)])

    skipped: list[str] = []
    sink = wds.ShardWriter(  # only max_count starts a shard (not webdataset's 3 GB default): the names were counted
        str(tmp / "%09d.tar"), maxcount=max_count, maxsize=float("inf"), verbose=0, post=finished
    )
    try:
        for i, pair in enumerate(pairs):
            sample = _sample(pair, i, skipped)
            if sample is not None:
                sink.write(sample)
    except BaseException:
        sink.post = None  # the shard being written keeps its temporary name and goes with the folder
        raise
    finally:
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return done, skipped


def _sample(pair: Pair, index: int, skipped: list[str]) -> dict[str, Any] | None:
    """The shard sample of a pair: the original image bytes, if they decode (else the reason goes to `skipped`)."""
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
        return None
    captions = json.dumps({"captions": pair.captions, "key": pair.key}, ensure_ascii=False)
    return {"__key__": f"{index:09d}", ext: data, "txt": pair.captions[0], "json": captions}
