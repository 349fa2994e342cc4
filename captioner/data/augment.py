"""Augmentations that cannot contradict a caption."""

from __future__ import annotations

import re

from PIL import Image, ImageOps

_LEFT_RIGHT = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_left_right(caption: str) -> str:
    """'the dog left of the cat' -> 'the dog right of the cat' (whole words, case kept)."""
    return _LEFT_RIGHT.sub(lambda m: _SWAP[m.group(0)], caption)


def hflip(image: Image.Image, captions: list[str]) -> tuple[Image.Image, list[str]]:
    """Mirror the image and swap 'left' and 'right' in its captions so that they stay true.

    Captions that list things "left to right" are reversed by a flip; a word swap cannot fix those, which is why
    flipping is off unless asked for (`data.hflip`).
    """
    return ImageOps.mirror(image), [swap_left_right(c) for c in captions]
