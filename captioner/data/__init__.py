"""Data: the built-in shapes scenes, image transforms and Lightning DataModules."""

from captioner.data.datamodule import CaptionDataModule, ShapesDataModule
from captioner.data.pairs_module import PairsDataModule

__all__ = ["CaptionDataModule", "PairsDataModule", "ShapesDataModule"]
