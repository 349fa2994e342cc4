"""Data: the built-in shapes scenes, image transforms and Lightning DataModules."""

from captioner.data.datamodule import CaptionDataModule, ShapesDataModule

__all__ = ["CaptionDataModule", "ShapesDataModule"]
