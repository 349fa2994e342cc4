"""The built-in shapes data as a DataModule: scenes rendered on the fly, no files needed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Dataset

from captioner.data.base import CaptionDataModule
from captioner.data.feature_cache import FeatureCache
from captioner.data.resumable import example_index, example_rng
from captioner.data.settings import Captions
from captioner.preprocess import Transform
from captioner.shapes.scenes import IMAGE_SIZE, captions, make_scene, scene_objects
from captioner.shapes.scoring import score


class ShapesDataset(Dataset):
    """Shapes scenes rendered on the fly; training examples draw one of the reference wordings at random."""

    def __init__(
        self,
        split: str,
        size: int,
        transform: Transform,
        train: bool,
        holdout: Sequence[Sequence[str]] = (),
        max_objects: int = 3,
    ) -> None:
        self.split, self.size, self.transform, self.train = split, size, transform, train
        self.holdout, self.max_objects = [(colour, shape) for colour, shape in holdout], max_objects
        self.features: FeatureCache | None = None  # set by the feature cache: rows instead of images

    def __len__(self) -> int:
        return self.size

    def images(self) -> Dataset:
        """The transformed image of every row, {"index", "image"} (what the feature cache encodes)."""
        return SceneImages(self)

    def cache_fingerprint(self) -> dict[str, Any]:
        return {
            "source": "shapes",
            "split": self.split,
            "size": self.size,
            "holdout": self.holdout,
            "max_objects": self.max_objects,
            "image_size": IMAGE_SIZE,
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i = example_index(key)
        if self.features is None:
            scene = make_scene(self.split, i, self.holdout, self.max_objects)
            references, pixels = scene.captions, {"image": self.transform(scene.image)}
        else:  # cached patch tokens (N, C): the scene's captions only, no image is drawn
            features = self.features.read(i)
            if features is None:  # a row marked failed (as in PairsDataset: the collator skips it and counts it)
                return {"error": f"scene {i} is marked failed in the feature cache", "path": str(self.features.path)}
            references = captions(scene_objects(self.split, i, self.holdout, self.max_objects))
            pixels = {"features": features}
        return {
            **pixels,
            "caption": example_rng(key).choice(references) if self.train else references[0],
            "index": i,
            "references": references,
        }


class ShapesDataModule(CaptionDataModule):
    """The built-in shapes data: no files needed.

    Args:
        holdout_pairs: (colour, shape) pairs kept out of train/val/test; they make up the "novel" split.
        captions: caption lengths in tokens (see `CaptionDataModule`).
    """

    TEXT_SCENES = 2000  # the training captions a tokenizer learns from: those of the first scenes (every wording)

    def __init__(
        self,
        train_size: int = 50_000,
        val_size: int = 256,
        test_size: int = 500,
        novel_size: int = 200,
        holdout_pairs: list[tuple[str, str]] | None = None,
        batch_size: int = 64,
        num_workers: int = 1,
        max_objects: int = 3,
        captions: Captions | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, captions)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size, "novel": novel_size}
        self.holdout = [(colour, shape) for colour, shape in holdout_pairs or []]
        self.max_objects = max_objects

    def training_texts(self) -> Iterator[str]:
        for i in range(min(self.TEXT_SCENES, self.sizes["train"])):
            yield from captions(scene_objects("train", i, self.holdout, self.max_objects))

    def training_references(self, limit: int) -> Iterator[list[str]]:
        for i in range(min(limit, self.sizes["train"])):
            yield captions(scene_objects("train", i, self.holdout, self.max_objects))

    def score_captions(self, stage: str, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Exact match and attribute accuracy against each scene's objects (drawn again from its index)."""
        split = {"val": "val", "test": "test"}[stage]
        scenes = [scene_objects(split, r["index"], self.holdout, self.max_objects) for r in rows]
        found = score([r["caption"] for r in rows], scenes)
        return {k: found[k] for k in ("exact_match", "attribute_accuracy")}

    def make_dataset(self, split: str, transform: Transform, train: bool) -> Dataset:
        return ShapesDataset(split, self.sizes[split], transform, train, self.holdout, self.max_objects)

    def describe(self) -> dict[str, Any]:
        """What the model was trained on (stored in the model package's training.json)."""
        return {
            "source": "shapes",
            "holdout_pairs": [list(p) for p in self.holdout],
            "train_size": self.sizes["train"],
            "max_objects": self.max_objects,
        }


class SceneImages(Dataset):
    """The images of a `ShapesDataset`, rendered and transformed: {"index", "image"}."""

    def __init__(self, scenes: ShapesDataset) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.scenes
        return {"index": i, "image": s.transform(make_scene(s.split, i, s.holdout, s.max_objects).image)}
