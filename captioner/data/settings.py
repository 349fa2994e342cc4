"""The groups of the DataModules' arguments: what each YAML section under `data.init_args` holds (LightningCLI
reads dataclasses as nested options: `data.init_args.captions.max_length`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from captioner.data.images import DEFAULT_MAX_PIXELS


@dataclass
class Captions:
    """How long a training caption may be, in tokens.

    Args:
        max_length: the longest caption in tokens, BOS and EOS included (at most the model's block size).
        truncate: train on captions longer than `max_length`, cut (EOS kept). By default `fit` measures the
            training captions under the tokenizer first and refuses when more than `max_truncated` (1 %) are.
    """

    max_length: int = 40
    truncate: bool = False
    max_truncated: float = 0.01


@dataclass
class Columns:
    """Column names: `image` (table; imagefolder reads `file_name`) and `caption` (table and imagefolder)."""

    image: str = "file_name"
    caption: str = "text"


@dataclass
class Split:
    """Where validation data comes from when `val` is not given.

    Args:
        val_fraction: imagefolder and table: this share of the training images, chosen by a hash of each key.
        karpathy_train: the Karpathy splits that train (its `val` split validates, `test` tests).
    """

    val_fraction: float = 0.05
    karpathy_train: list[str] = field(default_factory=lambda: ["train", "restval"])


@dataclass
class ImageChecks:
    """What is refused, skipped or counted in the images.

    Args:
        drop_missing: skip images named in the metadata but missing on disk (default: one error before training).
        allow_outside_root: train on image paths that resolve outside the data root (`..`, absolute paths,
            symbolic links); by default they are refused before training, with a count and examples.
        max_failure_rate: images failing to decode are skipped and counted; above this rate training stops.
        max_pixels: larger images are refused (decompression bombs) and counted as failures.
    """

    drop_missing: bool = False
    allow_outside_root: bool = False
    max_failure_rate: float = 0.02
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class Augment:
    """Training augmentation, off by default.

    Args:
        crop: timm's training transform (random resized crop at scale 0.8-1, no colour jitter, no flip); off by
            default because crops can cut away what a caption names.
        hflip: probability of a horizontal flip, with "left"/"right" swapped in the captions.
    """

    crop: bool = False
    hflip: float = 0.0


@dataclass
class Stream:
    """webdataset shards: `epoch_samples` per epoch per rank and worker, shuffled in a buffer of `shuffle_buffer`."""

    epoch_samples: int | None = None
    shuffle_buffer: int = 1000
