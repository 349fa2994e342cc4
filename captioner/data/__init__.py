"""Data: readers of image-caption pairs in every format, the DataModules, batching, shards and the feature cache.

Nothing here imports the model or the training code: the run's tokenizer and what the data needs from the model (its
preprocessing, block size) are handed over by `CaptionDataModule.connect`.
"""

from captioner.data.base import CaptionDataModule
from captioner.data.pairs import PairsDataModule
from captioner.data.settings import Augment, Captions, Columns, ImageChecks, Split, Stream
from captioner.data.sources import DataError, DataSource, Pair

__all__ = [
    "Augment",
    "CaptionDataModule",
    "Captions",
    "Columns",
    "DataError",
    "DataSource",
    "ImageChecks",
    "Pair",
    "PairsDataModule",
    "Split",
    "Stream",
]
