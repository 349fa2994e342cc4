"""Captioning images with a model package: load, preprocess with timm's config, batch, decode greedily."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from captioner.data.transforms import Transform, eval_transform
from captioner.generate import GenerationConfig, generate
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(device)


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB with its EXIF orientation applied."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")


def model_transform(model: Captioner) -> Transform:
    return eval_transform(model.encoder.data_config(), crop_pct=1.0)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def caption_images(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    images: Sequence[str | Path | Image.Image],
    batch_size: int = 32,
    generation: GenerationConfig | None = None,
) -> list[list[tuple[str, float]]]:
    """Captions for image files or PIL images: per image, (caption, score) pairs, best first.

    Decoding follows `generation` (greedy by default); see `captioner.generate` for what the score is.
    """
    transform = model_transform(model)
    device = next(model.parameters()).device
    out: list[list[tuple[str, float]]] = []
    for chunk in _batches(images, batch_size):
        pil = [im if isinstance(im, Image.Image) else load_image(im) for im in chunk]
        batch = torch.stack([transform(im.convert("RGB")) for im in pil]).to(device)
        for hyps in generate(model, batch, tokenizer, generation):
            out.append([(tokenizer.decode(h.tokens), h.score) for h in hyps])
    return out
