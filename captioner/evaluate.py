"""Evaluating a model on image-caption pairs of any format: caption them, score BLEU/METEOR/ROUGE-L/CIDEr-D."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from captioner.data.sources import Pair
from captioner.decoding import CaptionModel
from captioner.generate import GenerationConfig
from captioner.metrics import caption_metrics
from captioner.runs.files import RunOptions, caption_items, file_loader
from captioner.tokenizer import CaptionTokenizer


@torch.inference_mode()
def evaluate_pairs(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    pairs: Sequence[Pair],
    generation: GenerationConfig | None = None,
    options: RunOptions | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Caption image-caption `Pair`s and score the captions against their references (BLEU, METEOR, ROUGE-L,
    CIDEr-D). Images that fail to decode are reported and left out of the scores. Of the `options`, the batch size,
    workers, pixel limit and progress bar apply (the caller sets the precision: `captioner.device.autocast`)."""
    options = options or RunOptions()
    options.validate()
    records: list[dict[str, Any]] = []
    paths = [p.image for p in pairs]
    loader = file_loader(model, paths, options.batch_size, options.workers, options.max_image_pixels)
    for items in tqdm(loader, desc="captioning", disable=not options.progress, unit="batch"):
        for item, row in zip(items, caption_items(model, tokenizer, items, generation), strict=True):
            pair = pairs[item["index"]]
            records.append({"id": pair.key, **row, **({} if "error" in row else {"references": pair.captions})})
    scored = [r for r in records if "caption" in r]
    if not scored:
        raise ValueError("no image could be captioned")
    metrics = caption_metrics({r["id"]: r["caption"] for r in scored}, {r["id"]: r["references"] for r in scored})
    truncated = sum(bool(r.get("truncated")) for r in scored)  # cut by the token limit (caption_row marks them)
    return {**metrics, "count": len(scored), "failed": len(records) - len(scored), "truncated": truncated}, records
