"""Training examples from an image and its captions (`make_example`, shared by files and shards), and the
map-style dataset over `Pair`s; an image that fails to decode gives an error row instead of an exception."""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

from torch.utils.data import Dataset

from captioner.data.augment import hflip
from captioner.data.feature_cache import FeatureCache
from captioner.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageFiles, load_rgb
from captioner.data.resumable import example_index, example_rng
from captioner.data.sources import Pair
from captioner.preprocess import Transform


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
        self.features: FeatureCache | None = None  # set by the feature cache: rows instead of images

    def __len__(self) -> int:
        return len(self.pairs)

    def images(self) -> ImageFiles:
        """The transformed image of every row, or its error (what the feature cache encodes)."""
        return ImageFiles([p.image for p in self.pairs], self.transform, self.max_pixels)

    def cache_fingerprint(self) -> str:
        """sha256 of every image's path, size and modification time, in order: replacing, editing, adding or
        reordering images changes it."""
        h = hashlib.sha256()
        for p in self.pairs:
            try:
                st = os.stat(p.image)
                h.update(f"{p.image}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p.image}\0missing\n".encode())
        return h.hexdigest()

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i = example_index(key)
        p = self.pairs[i]
        rng = example_rng(key)
        if self.features is not None:  # cached patch tokens instead of the image (no augmentation by construction)
            feats = self.features.read(i)
            if feats is None:
                return {"error": f"{p.image} failed to decode when the feature cache was filled", "path": p.key}
            caption = rng.choice(p.captions) if self.train else p.captions[0]
            return {"features": feats, "caption": caption, "index": p.key, "references": p.captions}
        return make_example(
            p.image, p.captions, p.key, self.transform, self.train, self.hflip_prob, self.max_pixels, rng
        )
