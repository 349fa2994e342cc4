"""Data: readers of image-caption pairs in every format, the DataModules, batching, shards and the feature cache.

Nothing here imports the model or the training code: what the data needs from the model (its preprocessing,
block size) is handed over by `CaptionDataModule.connect`.
"""

from captioner.data.base import CaptionDataModule
from captioner.data.pairs import PairsDataModule
from captioner.data.sources import DataError, DataSource, Pair

__all__ = ["CaptionDataModule", "DataError", "DataSource", "Pair", "PairsDataModule"]
