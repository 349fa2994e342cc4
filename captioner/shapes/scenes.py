"""Built-in shapes scenes: deterministic from (split, index), with captions naming the objects left to right.

A scene is 1-3 non-overlapping objects on a light grey, slightly noisy 64x64 background. Each object is a
(size, colour, shape). Every reference caption lists the objects left to right as "{size} {colour} {shape}".
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from captioner.outputs import write_jsonl

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 35),
    "purple": (140, 60, 185),
    "orange": (245, 135, 25),
}
SIZES = {"small": 5, "large": 10}  # half-width in pixels
IMAGE_SIZE = 64
MIN_X_GAP = 4  # object centres differ by at least this much in x, so "left to right" is unambiguous
NUMBERS = {1: "one", 2: "two", 3: "three"}
SPLITS = ("train", "val", "test", "novel")


@dataclass(frozen=True)
class ShapeObject:
    size: str
    color: str
    shape: str
    x: int  # centre
    y: int

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        r = SIZES[self.size]
        return (self.x - r, self.y - r, self.x + r, self.y + r)

    def to_dict(self) -> dict:
        return {"size": self.size, "color": self.color, "shape": self.shape, "box": list(self.box)}


Pair = tuple[str, str]  # (colour, shape)


def scene_objects(split: str, index: int, holdout: Sequence[Pair] = (), max_objects: int = 3) -> list[ShapeObject]:
    """The objects of scene `index` of `split`, sorted left to right. Deterministic.

    With `holdout` (colour, shape) pairs, train/val/test scenes never contain them and every "novel" scene
    contains at least one.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; choose one of {SPLITS}")
    if split == "novel" and not holdout:
        raise ValueError("the 'novel' split needs held-out (colour, shape) pairs (`holdout`)")
    rng = random.Random(zlib.crc32(f"{split}/{index}".encode()))
    held = {tuple(p) for p in holdout}
    while True:
        objs = _place(rng, rng.randint(1, max_objects))
        pairs = {(o.color, o.shape) for o in objs}
        if split == "novel" and pairs & held or split != "novel" and not pairs & held:
            return sorted(objs, key=lambda o: o.x)


def _place(rng: random.Random, n: int) -> list[ShapeObject]:
    objs: list[ShapeObject] = []
    while len(objs) < n:
        size = rng.choice(list(SIZES))
        r = SIZES[size]
        x, y = rng.randint(r + 1, IMAGE_SIZE - r - 2), rng.randint(r + 1, IMAGE_SIZE - r - 2)
        ok = all(
            abs(x - o.x) >= MIN_X_GAP and (abs(x - o.x) > r + SIZES[o.size] + 1 or abs(y - o.y) > r + SIZES[o.size] + 1)
            for o in objs
        )
        if ok:
            objs.append(ShapeObject(size, rng.choice(list(COLORS)), rng.choice(SHAPES), x, y))
    return objs


def render(objects: Sequence[ShapeObject], seed: int) -> Image.Image:
    """A 64x64 RGB image of the objects on a light grey background with mild noise."""
    noise = np.random.default_rng(seed).integers(-8, 9, size=(IMAGE_SIZE, IMAGE_SIZE, 1))
    bg = np.clip(200 + noise, 0, 255).repeat(3, axis=2).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    for o in objects:
        _draw(draw, o)
    return img


def _draw(draw: ImageDraw.ImageDraw, o: ShapeObject) -> None:
    r, c = SIZES[o.size], COLORS[o.color]
    x0, y0, x1, y1 = o.box
    if o.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=c)
    elif o.shape == "square":
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), fill=c)
    elif o.shape == "triangle":
        draw.polygon([(o.x, y0), (x0, y1), (x1, y1)], fill=c)
    else:  # cross: a plus sign with arms a third of the width
        t = max(1, r // 3)
        draw.rectangle((x0, o.y - t, x1, o.y + t), fill=c)
        draw.rectangle((o.x - t, y0, o.x + t, y1), fill=c)


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def captions(objects: Sequence[ShapeObject]) -> list[str]:
    """Reference captions (four wordings), all naming the objects left to right."""
    a = [f"a {o.phrase}" for o in objects]
    n = len(objects)
    return [
        _join(a),
        f"{NUMBERS[n]} shape{'s' if n > 1 else ''}: {_join(a)}",
        f"from left to right, {_join(a)}" if n > 1 else f"a single {objects[0].phrase}",
        f"there {'are' if n > 1 else 'is'} {_join(a)}",
    ]


@dataclass
class ShapesScene:
    index: int
    split: str
    image: Image.Image
    objects: list[ShapeObject]
    captions: list[str]


def make_scene(split: str, index: int, holdout: Sequence[Pair] = (), max_objects: int = 3) -> ShapesScene:
    objs = scene_objects(split, index, holdout, max_objects)
    seed = zlib.crc32(f"noise/{split}/{index}".encode())
    return ShapesScene(index, split, render(objs, seed), objs, captions(objs))


# ---- writing to disk ---------------------------------------------------------------------------------------------


def write_imagefolder(
    directory: str | Path,
    split: str,
    count: int,
    holdout: Sequence[Pair] = (),
    overwrite: bool = False,
    size: tuple[int, int] | None = None,
    suffix: str = "png",
) -> Path:
    """Write scenes as a Hugging Face style imagefolder: images + `metadata.jsonl` (file_name, text=[captions]).
    `size` resizes the images (bicubic), e.g. (640, 480) with suffix "jpg" for photo-like files."""
    directory = Path(directory)
    meta = directory / "metadata.jsonl"
    if meta.exists() and not overwrite:
        raise FileExistsError(f"{meta} exists; pass overwrite=True to replace it")
    if meta.exists() and not _written_by_shapes(meta):
        raise FileExistsError(
            f"{meta} is not the metadata of shapes scenes; {directory} is left as it is, choose another folder"
        )
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        scene = make_scene(split, i, holdout)
        name = f"images/{split}_{i:06d}.{suffix}"
        image = scene.image if size is None else scene.image.resize(size, Image.Resampling.BICUBIC)
        options: dict[str, Any] = {"quality": 90} if suffix in ("jpg", "jpeg") else {}  # Pillow's, per format
        image.save(directory / name, **options)
        rows.append({"file_name": name, "text": scene.captions, "objects": [o.to_dict() for o in scene.objects]})
    write_jsonl(meta, rows, overwrite=True)
    return directory


def _written_by_shapes(meta: Path) -> bool:
    """Whether metadata.jsonl is one `write_imagefolder` wrote (its rows carry the scene's objects): only such a
    folder is overwritten."""
    with meta.open("rb") as f:
        first = f.readline(1 << 20)
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and isinstance(row.get("objects"), list) and "file_name" in row
