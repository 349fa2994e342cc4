"""The built-in task: shapes scenes, their DataModule, scoring, evaluation and where the attention looks."""

from captioner.shapes.data import ShapesDataModule, ShapesDataset
from captioner.shapes.scenes import ShapeObject, ShapesScene, captions, make_scene, scene_objects, write_imagefolder
from captioner.shapes.scoring import parse_caption, score

__all__ = [
    "ShapeObject",
    "ShapesDataModule",
    "ShapesDataset",
    "ShapesScene",
    "captions",
    "make_scene",
    "parse_caption",
    "scene_objects",
    "score",
    "write_imagefolder",
]
