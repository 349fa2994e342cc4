"""Where image-caption pairs come from: imagefolder (metadata.jsonl/csv), a JSONL/CSV table, COCO captions,
Karpathy splits. `DataSource` describes one (format, root, columns) for `fit`, `evaluate` and `shards` alike.

Every reader returns `Pair`s (an image path and its captions). Bad input gets an error naming the file, line,
field or value, and what to do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioner.data.tables import DataError, read_rows

log = logging.getLogger(__name__)


@dataclass
class Pair:
    image: str  # path of the image file
    captions: list[str] = field(default_factory=list)  # one or more references
    key: str = ""  # stable id (file name relative to the root, COCO image id, ...)


def _captions(value: Any, where: str) -> list[str | None]:
    """A caption value: a string or a list of strings (None entries are null captions, counted by the caller)."""
    if value is None or isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(v is None or isinstance(v, str) for v in value):
        return value
    raise DataError(
        f"{where} is {type(value).__name__} {str(value)[:40]!r}; a caption is a string or a list of strings"
    )


def read_table(
    path: str | Path, root: str | Path | None = None, image_column: str = "file_name", caption_column: str = "text"
) -> list[Pair]:
    """Rows of (image path, caption or list of captions); paths relative to `root` (default: the table's folder).

    Several rows naming the same image are merged: their captions are all references of that image.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    by_key: dict[str, Pair] = {}
    nulls = 0
    for number, row in read_rows(path):
        for column in (image_column, caption_column):
            if column not in row:
                raise DataError(
                    f"{path}: line {number} has no column {column!r}; columns found: {sorted(row)}. "
                    f"Set image_column / caption_column to the right names."
                )
        key = row[image_column]
        if not isinstance(key, str) or not key:
            raise DataError(f"{path}: line {number}: {image_column!r} is {key!r}; it holds the image's path")
        captions = _captions(row[caption_column], f"{path}: line {number}: {caption_column!r}")
        nulls += captions.count(None)
        pair = by_key.setdefault(key, Pair(str(root / key), [], key))
        pair.captions.extend(c for c in captions if c is not None)
    if nulls:
        log.warning("%s: dropped %d null caption(s)", path, nulls)
    return list(by_key.values())


def read_imagefolder(directory: str | Path, caption_column: str = "text") -> list[Pair]:
    """A Hugging Face `imagefolder`: images in any nesting + metadata.jsonl or metadata.csv with `file_name`."""
    directory = Path(directory)
    for name in ("metadata.jsonl", "metadata.csv"):
        if (directory / name).is_file():
            return read_table(directory / name, directory, "file_name", caption_column)
    raise DataError(f"{directory}: no metadata.jsonl or metadata.csv (an imagefolder needs one, with file_name)")


def read_coco(annotations: str | Path, image_dir: str | Path) -> list[Pair]:
    """COCO captions (`annotations/captions_train2017.json`) with its image folder (`train2017/`)."""
    data = _load_json(annotations)
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"{annotations}: no {key!r} list; is this a COCO captions file? keys found: {sorted(data)}")
    try:
        pairs = {img["id"]: Pair(str(Path(image_dir) / img["file_name"]), [], str(img["id"])) for img in data["images"]}
        for ann in data["annotations"]:
            if ann["image_id"] in pairs:
                captions = _captions(ann["caption"], f"{annotations}: a caption")
                pairs[ann["image_id"]].captions.extend(c for c in captions if c is not None)
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{annotations}: an image or annotation entry lacks {err} (COCO: id, file_name; image_id, caption)"
        )
    return list(pairs.values())


KARPATHY_SPLITS = ("train", "restval", "val", "test")


def read_karpathy(split_file: str | Path, image_dir: str | Path, splits: Iterable[str]) -> list[Pair]:
    """Karpathy split files (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).

    Image paths: `image_dir/filepath/filename` (COCO: filepath is train2014 or val2014), else `image_dir/filename`.
    """
    splits = list(splits)
    unknown = sorted(set(splits) - set(KARPATHY_SPLITS))
    if unknown:
        raise DataError(f"unknown Karpathy split(s) {unknown}; choose from {list(KARPATHY_SPLITS)}")
    data = _load_json(split_file)
    if "images" not in data:
        raise DataError(f"{split_file}: no 'images' list; is this a Karpathy split file (dataset_coco.json)?")
    out = []
    try:
        for img in data["images"]:
            if img.get("split") in splits:
                rel = Path(img.get("filepath", "")) / img["filename"]
                key = str(img.get("cocoid", img.get("imgid", rel)))
                captions = [c for s in img.get("sentences", []) for c in _captions(s["raw"], f"{split_file}: raw")]
                out.append(Pair(str(Path(image_dir) / rel), [c for c in captions if c is not None], key))
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{split_file}: an image entry lacks {err} (Karpathy: filename, split, sentences[].raw)")
    return out


def coco_image_dir(annotations: str | Path) -> str:
    """COCO layout: `<coco>/annotations/captions_train2017.json` -> `<coco>/train2017`."""
    path = Path(annotations)
    return str(path.parent.parent / path.stem.split("_")[-1])


def read_pairs(
    fmt: str,
    path: str | Path,
    root: str | Path | None = None,
    image_column: str = "file_name",
    caption_column: str = "text",
    splits: Iterable[str] = ("test",),
    allow_outside_root: bool = False,
) -> list[Pair]:
    """Any file format by name: imagefolder, table, coco or karpathy (`splits` for Karpathy files). Image paths
    must stay inside the data root (the folder, `root`, or its default) unless `allow_outside_root`."""
    if fmt == "imagefolder":
        base, pairs = Path(path), read_imagefolder(path, caption_column)
    elif fmt == "table":
        base = Path(root) if root is not None else Path(path).parent
        pairs = read_table(path, base, image_column, caption_column)
    elif fmt == "coco":
        base = Path(root or coco_image_dir(path))
        pairs = read_coco(path, base)
    elif fmt == "karpathy":
        base = Path(root or Path(path).parent)
        pairs = read_karpathy(path, base, splits)
    else:
        raise DataError(f"unknown data format {fmt!r}; choose imagefolder, table, coco or karpathy")
    if not allow_outside_root:
        check_inside(pairs, base, path)
    return pairs


def check_inside(pairs: list[Pair], root: Path, source: str | Path) -> None:
    """Every image path, with '..' and symbolic links resolved, lies inside `root` (resolved too)."""
    base = root.resolve()
    outside = [p.image for p in pairs if not Path(p.image).resolve().is_relative_to(base)]
    if outside:
        raise DataError(
            f"{source}: {len(outside)} of {len(pairs)} image path(s) lie outside the data root {root} (after "
            f"resolving '..' and symbolic links), e.g. {outside[:3]}. Keep the images under the root, or set "
            "allow_outside_root: true if you mean it"
        )


FORMATS = ("imagefolder", "table", "coco", "karpathy")


@dataclass
class DataSource:
    """How to read image-caption pairs of one format; the path to read (and Karpathy splits) is given per call.

    Args:
        format: imagefolder (a folder with metadata.jsonl/csv), table (a .jsonl/.csv file), coco (captions_*.json)
            or karpathy (dataset_coco.json, dataset_flickr8k.json, ...).
        root: the image folder. table: paths are relative to it (default: the table's folder); coco: default
            `<annotations>/../train2017` from the file name; karpathy: the folder holding `filepath/filename`
            (default: the split file's folder).
        image_column, caption_column: column names (table; imagefolder uses `file_name` + caption_column).
        allow_outside_root: read image paths that resolve outside the root; by default they are refused, with a
            count and examples, before anything is opened.
    """

    format: str = "imagefolder"
    root: str | None = None
    image_column: str = "file_name"
    caption_column: str = "text"
    allow_outside_root: bool = False  # image paths may leave the root ('..', absolute paths, symbolic links)

    def read(self, path: str | Path, splits: Iterable[str] = ("test",)) -> list[Pair]:
        """The pairs of `path` (`splits`: the Karpathy splits to take)."""
        return read_pairs(
            self.format, path, self.root, self.image_column, self.caption_column, splits, self.allow_outside_root
        )


def _load_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8; re-save it as UTF-8") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno} is not valid JSON ({err.msg})") from err


def clean(pairs: list[Pair], source: str, drop_missing: bool = False) -> list[Pair]:
    """Drop empty/whitespace captions (and images left without any), check the image files exist.

    Missing images are one error listing the count and the first few paths, unless `drop_missing`.
    """
    empty = 0
    kept: list[Pair] = []
    for pair in pairs:
        good = [c.strip() for c in pair.captions if c and c.strip()]
        empty += len(pair.captions) - len(good)
        if good:
            kept.append(Pair(pair.image, good, pair.key))
    if empty:
        log.warning("%s: dropped %d empty or whitespace-only caption(s)", source, empty)
    missing = [p for p in kept if not Path(p.image).is_file()]
    if missing:
        first = ", ".join(p.image for p in missing[:5])
        if not drop_missing:
            raise DataError(
                f"{source}: {len(missing)} of {len(kept)} image file(s) named in the metadata do not exist, "
                f"e.g. {first}. Fix the paths (or root), or set drop_missing: true to skip them."
            )
        log.warning("%s: dropped %d missing image file(s), e.g. %s", source, len(missing), first)
        kept = [p for p in kept if Path(p.image).is_file()]
    if not kept:
        raise DataError(f"{source}: no usable image-caption pairs")
    return kept
