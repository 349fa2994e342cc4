"""Where the cross-attention looks: the share of each generated shape word's attention inside its object's box."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from captioner.inference import caption_batch
from captioner.model import Captioner
from captioner.shapes.evaluate import scene_batches
from captioner.shapes.scenes import IMAGE_SIZE, SHAPES, make_scene
from captioner.shapes.scoring import parse_caption
from captioner.tokenizer import CaptionTokenizer
from captioner.viz import cross_attention_maps, words


def attention_in_boxes(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    split: str = "test",
    count: int = 200,
    holdout: Sequence[tuple[str, str]] = (),
    layer: int | None = -1,
    max_objects: int = 3,
) -> dict[str, float]:
    """How much of the cross-attention (mean over heads; last layer by default) of each generated shape word
    falls inside that object's box, over the scenes captioned exactly right (the k-th shape word is the k-th
    object from the left).

    Attention is given per patch, so the box is taken at the patch grid's resolution: `mean_mass_in_box` sums
    the weights of the patches the box overlaps. `mean_mass_in_box_pixels` spreads each patch's weight over its
    pixels and counts only the pixels inside the box; it understates a perfect map (all weight on the object's
    patches) by the share of those patches lying outside the box (a 10 px object on four 8 px patches: at most
    39 %). `pointing_accuracy`: the share of words whose highest-weight patch overlaps the box (pointing game)."""
    return attention_in_boxes_by_layer(model, tokenizer, split, count, holdout, {"": layer}, max_objects)[""]


@torch.inference_mode()
def attention_in_boxes_by_layer(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    split: str,
    count: int,
    holdout: Sequence[tuple[str, str]],
    layers: dict[str, int | None],
    max_objects: int = 3,
) -> dict[str, dict[str, float]]:
    """`attention_in_boxes` for several layer choices (name -> layer index, None: mean of layers) from one
    pass: scenes drawn, encoded and captioned once."""
    scenes = [make_scene(split, i, holdout, max_objects) for i in range(count)]
    pixel: dict[str, list[float]] = {name: [] for name in layers}
    patch: dict[str, list[float]] = {name: [] for name in layers}
    pointing: dict[str, list[float]] = {name: [] for name in layers}
    for chunk, memory in scene_batches(model, scenes, 100):
        tokens = [c.tokens for c in caption_batch(model, tokenizer, memory=memory)]
        eos = [t or [tokenizer.eos_id] for t in tokens]
        right = [
            (i, shape_word_positions(tokenizer, toks))
            for i, (scene, toks) in enumerate(zip(chunk, tokens, strict=True))
            if parse_caption(tokenizer.decode(toks)) == [(o.size, o.color, o.shape) for o in scene.objects]
        ]
        for name, layer in layers.items():
            maps = cross_attention_maps(model, None, eos, tokenizer.bos_id, layer, memory=memory)
            for i, shape_words in right:
                for obj, positions in zip(chunk[i].objects, shape_words, strict=False):
                    word_map = maps[i][positions].mean(0)  # (h, w), sums to 1
                    coverage = _box_coverage(obj.box, word_map.shape, IMAGE_SIZE)  # (h, w) in [0, 1]
                    pixel[name].append(float((word_map * coverage).sum()))
                    patch[name].append(float(word_map[coverage > 0].sum()))
                    pointing[name].append(float(coverage.flatten()[word_map.argmax()] > 0))
    return {name: _box_summary(patch[name], pixel[name], pointing[name]) for name in layers}


def _box_summary(patch: list[float], pixel: list[float], pointing: list[float]) -> dict[str, float]:
    if not patch:
        return {"mean_mass_in_box": float("nan"), "shape_words": 0}
    on_patches = torch.tensor(patch)
    return {
        "mean_mass_in_box": float(on_patches.mean()),
        "share_of_words_with_majority_in_box": float((on_patches > 0.5).float().mean()),
        "pointing_accuracy": sum(pointing) / len(pointing),
        "mean_mass_in_box_pixels": sum(pixel) / len(pixel),
        "shape_words": len(patch),
    }


PUNCTUATION = ",.;:!?"


def shape_word_positions(tokenizer: CaptionTokenizer, tokens: list[int]) -> list[list[int]]:
    """Token positions of each shape word of a caption, left to right. A word keeps only its own tokens: in
    "a small red square, a large ..." the word is "square" and the comma's token is left out."""
    found = []
    for word, positions in words(tokenizer, tokens):
        if word.strip(PUNCTUATION) in SHAPES:
            own = [p for p in positions if tokenizer.decode([tokens[p]]).strip().strip(PUNCTUATION)]
            found.append(own or positions)
    return found


def _box_coverage(box: tuple[int, int, int, int], grid: tuple[int, ...], image_size: int) -> torch.Tensor:
    """(h, w) fraction of each patch's area inside the box (pixel box, inclusive)."""
    h, w = grid
    ph, pw = image_size / h, image_size / w
    x0, y0, x1, y1 = box[0], box[1], box[2] + 1, box[3] + 1
    ys = torch.arange(h, dtype=torch.float32) * ph
    xs = torch.arange(w, dtype=torch.float32) * pw
    oy = ((ys + ph).clamp(max=y1) - ys.clamp(min=y0)).clamp(min=0) / ph  # (h,)
    ox = ((xs + pw).clamp(max=x1) - xs.clamp(min=x0)).clamp(min=0) / pw  # (w,)
    return oy[:, None] * ox[None, :]
