"""Evaluating a model package on the built-in shapes data: exact match, attribute accuracy, image-blind control."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from captioner.data.shapes import make_scene, score
from captioner.generate import GenerationConfig, generate
from captioner.inference import model_transform
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer


def _scene_batches(
    model: Captioner, scenes: Sequence, batch_size: int, progress: bool = False, desc: str = ""
) -> Iterator[tuple[Sequence, torch.Tensor]]:
    """(scenes, image memory (B, N, D)) batch by batch, images through the model's timm transform."""
    transform = model_transform(model)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(scenes), batch_size), desc=desc, disable=not progress, unit="batch"):
        chunk = scenes[start : start + batch_size]
        yield chunk, model.encode(torch.stack([transform(s.image) for s in chunk]).to(device))


@torch.inference_mode()
def evaluate_shapes(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    split: str = "test",
    count: int = 500,
    holdout: Sequence[tuple[str, str]] = (),
    batch_size: int = 100,
    blind: bool = False,
    progress: bool = True,
    generation: GenerationConfig | None = None,
    with_caption_metrics: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Caption `count` scenes of `split` and score them (and with BLEU/METEOR/ROUGE-L/CIDEr-D if asked).

    Args:
        blind: the image-blind control: each image's memory is replaced by the next image's in the batch
            (a cyclic shift), so a model that really reads the image through cross-attention scores near zero.
    Returns:
        metrics and one prediction record per scene (id, caption, references, objects left to right).
    """
    scenes = [make_scene(split, i, holdout) for i in range(count)]
    captions: list[str] = []
    for _, memory in _scene_batches(model, scenes, batch_size, progress, f"captioning {split}"):
        if blind:
            memory = memory.roll(1, dims=0)
        hyps = generate(model, None, tokenizer, generation, memory=memory)
        captions.extend(tokenizer.decode(h[0].tokens) for h in hyps)
    metrics: dict[str, Any] = score(captions, [s.objects for s in scenes])
    if with_caption_metrics:
        from captioner.metrics import caption_metrics

        keys = [f"{s.split}/{s.index}" for s in scenes]
        metrics.update(caption_metrics(dict(zip(keys, captions)), {k: s.captions for k, s in zip(keys, scenes)}))
    records = [
        {
            "id": f"{s.split}/{s.index}",
            "caption": c,
            "references": s.captions,
            "objects": [o.to_dict() for o in s.objects],
        }
        for s, c in zip(scenes, captions, strict=True)
    ]
    return metrics, records


def write_jsonl(path: str | Path, records: Sequence[dict[str, Any]], overwrite: bool = False) -> Path:
    """Write records as JSON lines atomically; refuses to replace an existing file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


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
    from captioner.data.shapes import IMAGE_SIZE, parse_caption
    from captioner.viz import cross_attention_maps

    scenes = [make_scene(split, i, holdout, max_objects) for i in range(count)]
    pixel: dict[str, list[float]] = {name: [] for name in layers}
    patch: dict[str, list[float]] = {name: [] for name in layers}
    pointing: dict[str, list[float]] = {name: [] for name in layers}
    for chunk, memory in _scene_batches(model, scenes, 100):
        tokens = [h[0].tokens for h in generate(model, None, tokenizer, memory=memory)]
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
    from captioner.data.shapes import SHAPES
    from captioner.viz import words

    found = []
    for word, positions in words(tokenizer, tokens):
        if word.strip(PUNCTUATION) in SHAPES:
            own = [p for p in positions if tokenizer.decode([tokens[p]]).strip().strip(PUNCTUATION)]
            found.append(own or positions)
    return found


def _box_coverage(box: tuple[int, int, int, int], grid: tuple[int, int], image_size: int) -> torch.Tensor:
    """(h, w) fraction of each patch's area inside the box (pixel box, inclusive)."""
    h, w = grid
    ph, pw = image_size / h, image_size / w
    x0, y0, x1, y1 = box[0], box[1], box[2] + 1, box[3] + 1
    ys = torch.arange(h, dtype=torch.float32) * ph
    xs = torch.arange(w, dtype=torch.float32) * pw
    oy = ((ys + ph).clamp(max=y1) - ys.clamp(min=y0)).clamp(min=0) / ph  # (h,)
    ox = ((xs + pw).clamp(max=x1) - xs.clamp(min=x0)).clamp(min=0) / pw  # (w,)
    return oy[:, None] * ox[None, :]


@torch.inference_mode()
def evaluate_pairs(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    pairs: Sequence,
    generation: GenerationConfig | None = None,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Caption image-caption `Pair`s and score the captions against their references (BLEU, METEOR, ROUGE-L,
    CIDEr-D). Images that fail to decode are reported and left out of the scores."""
    from torch.utils.data import DataLoader

    from captioner.captioning import ImageFiles
    from captioner.metrics import caption_metrics

    by_path = {p.image: p for p in pairs}
    loader = DataLoader(
        ImageFiles(list(by_path), model_transform(model)), batch_size=batch_size, num_workers=workers,
        collate_fn=lambda items: items,
    )  # fmt: skip
    device = next(model.parameters()).device
    records: list[dict[str, Any]] = []
    for items in tqdm(loader, desc="captioning", disable=not progress, unit="batch"):
        good = [it for it in items if "image" in it]
        records.extend(
            {"id": by_path[it["path"]].key, "path": it["path"], "error": it["error"]} for it in items if "error" in it
        )
        if good:
            hyps = generate(model, torch.stack([it["image"] for it in good]).to(device), tokenizer, generation)
            for it, h in zip(good, hyps, strict=True):
                pair = by_path[it["path"]]
                records.append({"id": pair.key, "path": it["path"], "caption": tokenizer.decode(h[0].tokens),
                                "references": pair.captions})  # fmt: skip
    scored = [r for r in records if "caption" in r]
    if not scored:
        raise ValueError("no image could be captioned")
    metrics = caption_metrics({r["id"]: r["caption"] for r in scored}, {r["id"]: r["references"] for r in scored})
    return {**metrics, "count": len(scored), "failed": len(records) - len(scored)}, records
