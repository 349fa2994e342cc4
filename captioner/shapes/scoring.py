"""Scoring a caption against its shapes scene: the (size, colour, shape) list read back, left to right."""

from __future__ import annotations

import re
from collections.abc import Sequence

from captioner.shapes.scenes import COLORS, SHAPES, SIZES, ShapeObject

PHRASE = re.compile(rf"\b({'|'.join(SIZES)})\s+({'|'.join(COLORS)})\s+({'|'.join(SHAPES)})\b")


def parse_caption(caption: str) -> list[tuple[str, str, str]]:
    """The (size, colour, shape) phrases named in a caption, in order."""
    return PHRASE.findall(caption.lower())


def score(predictions: Sequence[str], objects: Sequence[Sequence[ShapeObject]]) -> dict[str, float]:
    """Semantic exact match and attribute accuracy of captions against their scenes.

    Exact match: the ordered (size, colour, shape) list read from the caption equals the scene's.
    Attribute accuracy: objects are aligned by position (left to right); each of size, colour and shape that
    agrees counts one, over 3 x max(#objects in scene, #objects in caption), so missing and extra objects cost.
    """
    if len(predictions) != len(objects):
        raise ValueError(f"{len(predictions)} predictions for {len(objects)} scenes")
    exact, attr_ok, attr_total = 0, 0, 0
    for caption, objs in zip(predictions, objects, strict=True):
        pred = parse_caption(caption)
        true = [(o.size, o.color, o.shape) for o in objs]
        exact += pred == true
        attr_ok += sum(a == b for p, t in zip(pred, true, strict=False) for a, b in zip(p, t, strict=True))
        attr_total += 3 * max(len(pred), len(true))
    n = max(len(predictions), 1)
    return {"exact_match": exact / n, "attribute_accuracy": attr_ok / max(attr_total, 1), "count": len(predictions)}
