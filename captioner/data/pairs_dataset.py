"""Map-style dataset over `Pair`s, with decode failures reported instead of raised."""

from __future__ import annotations

import random
from typing import Any

from torch.utils.data import Dataset

from captioner.data.augment import hflip
from captioner.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, load_rgb
from captioner.data.pairs import Pair
from captioner.data.resumable import example_index, example_rng
from captioner.data.transforms import Transform


def make_example(
    image_source: Any,
    captions: list[str],
    key: str,
    transform: Transform,
    train: bool,
    hflip_prob: float = 0.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """One example dict; a file that fails to decode gives {"error": reason, "path": ...} instead."""
    rng = rng or random.Random()
    try:
        image = load_rgb(image_source, max_pixels)
    except ImageDecodeError as err:
        return {"error": str(err), "path": key}
    if train and hflip_prob > 0 and rng.random() < hflip_prob:
        image, captions = hflip(image, captions)
    return {
        "image": transform(image),
        "caption": rng.choice(captions) if train else captions[0],
        "index": key,
        "references": captions,
        "objects": None,
    }


class PairsDataset(Dataset):
    def __init__(
        self,
        pairs: list[Pair],
        transform: Transform,
        train: bool,
        hflip_prob: float = 0.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.pairs, self.transform, self.train = pairs, transform, train
        self.hflip_prob, self.max_pixels = hflip_prob, max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        p = self.pairs[example_index(key)]
        rng = example_rng(key)
        return make_example(
            p.image, p.captions, p.key, self.transform, self.train, self.hflip_prob, self.max_pixels, rng
        )
