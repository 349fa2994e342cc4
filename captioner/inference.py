"""THE captioning core: a batch of images (or their encoder memory) -> captions with scores, tokens and n-best,
and `caption(...)`, the public function over image files or PIL images.

Everything that captions goes through `caption_batch`: runs over files (`captioner.runs`: `captioner caption`,
`captioner evaluate`), the server, validation during training, and `caption`. Images are preprocessed with the
model's own recorded preprocessing (`model.preprocessing`), as in training. The core knows nothing of outputs,
processes or command-line flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from captioner.data.images import load_rgb, to_rgb
from captioner.decoding import CaptionModel
from captioner.device import resolve_device
from captioner.generate import GenerationConfig, Hypothesis, generate
from captioner.model import Captioner
from captioner.options import BATCH_SIZE, DEVICE, MAX_IMAGE_PIXELS, Spec
from captioner.tokenizer import CaptionTokenizer


@dataclass
class Caption:
    """One image's caption: the best hypothesis, and every returned one (best first) in `n_best`."""

    text: str
    score: float
    tokens: list[int]  # generated token ids, without BOS and EOS
    n_best: list[tuple[str, float]] = field(default_factory=list)
    truncated: bool = False  # the best hypothesis hit the token limit before its EOS: the caption may be cut


def to_caption(tokenizer: CaptionTokenizer, hyps: list[Hypothesis]) -> Caption:
    n_best = [(tokenizer.decode(h.tokens), h.score) for h in hyps]
    return Caption(n_best[0][0], hyps[0].score, hyps[0].tokens, n_best, hyps[0].truncated)


@torch.inference_mode()
def caption_batch(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    images: torch.Tensor | None = None,
    generation: GenerationConfig | None = None,
    memory: Any = None,
) -> list[Caption]:
    """Captions of (B, 3, H, W) preprocessed images, or of their memory from `model.encode` ((B, N, D) for a
    `Captioner`)."""
    return [to_caption(tokenizer, h) for h in generate(model, images, tokenizer, generation, memory)]


def caption(
    images: Sequence[str | Path | Image.Image],
    model: str | Path | CaptionModel,
    tokenizer: CaptionTokenizer | None = None,
    generation: GenerationConfig | None = None,
    batch_size: int = BATCH_SIZE.default,
    device: str = DEVICE.default,
    max_image_pixels: int = MAX_IMAGE_PIXELS.default,
) -> list[Caption]:
    """Caption image files or PIL images in one call: `captioner.caption(["a.jpg"], model="runs/.../model")`.

    Args:
        model: a model package folder, a folder `captioner export-onnx` wrote (run by ONNX Runtime), or a loaded
            `Captioner` or `captioner.export.runtime.OnnxCaptioner` (then pass its `tokenizer`).
        generation: decoding options (greedy by default; see `GenerationConfig`).
        device: where a package given by its folder is loaded (`captioner.device.resolve_device`).
        max_image_pixels: image files with more pixels are refused (decompression bombs).
    Returns:
        one `Caption` per image (`.text`, `.score`, `.n_best`), in order.
    """
    from captioner.export.onnx import is_export

    Spec.of("batch_size", BATCH_SIZE).check(batch_size)
    if isinstance(model, (str, Path)) and is_export(model):
        from captioner.export.runtime import OnnxCaptioner

        model, tokenizer = OnnxCaptioner.load(model)
    elif isinstance(model, (str, Path)):
        model, tokenizer = Captioner.from_pretrained(model, map_location=resolve_device(device))
    if tokenizer is None:
        raise ValueError("caption(model=<a Captioner>) needs its tokenizer: pass tokenizer=")
    transform = model.preprocessing.eval_transform()
    out: list[Caption] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pil = [to_rgb(im) if isinstance(im, Image.Image) else load_rgb(im, max_image_pixels) for im in chunk]
        batch = torch.stack([transform(im) for im in pil]).to(model.device)  # (B, 3, H, W)
        out.extend(caption_batch(model, tokenizer, batch, generation))
    return out
