"""Evaluating a model on image-caption pairs of any format: caption them, score BLEU/METEOR/ROUGE-L/CIDEr-D."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from captioner.data.images import DEFAULT_MAX_PIXELS
from captioner.data.sources import Pair
from captioner.generate import GenerationConfig
from captioner.inference import caption_items, file_loader
from captioner.metrics import caption_metrics
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer


@torch.inference_mode()
def evaluate_pairs(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    pairs: Sequence[Pair],
    generation: GenerationConfig | None = None,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Caption image-caption `Pair`s and score the captions against their references (BLEU, METEOR, ROUGE-L,
    CIDEr-D). Images that fail to decode are reported and left out of the scores."""
    records: list[dict[str, Any]] = []
    loader = file_loader(model, [p.image for p in pairs], batch_size, workers, DEFAULT_MAX_PIXELS)
    for items in tqdm(loader, desc="captioning", disable=not progress, unit="batch"):
        for item, row in zip(items, caption_items(model, tokenizer, items, generation), strict=True):
            pair = pairs[item["index"]]
            records.append({"id": pair.key, **row, **({} if "error" in row else {"references": pair.captions})})
    scored = [r for r in records if "caption" in r]
    if not scored:
        raise ValueError("no image could be captioned")
    metrics = caption_metrics({r["id"]: r["caption"] for r in scored}, {r["id"]: r["references"] for r in scored})
    truncated = sum(bool(r.get("truncated")) for r in scored)  # cut by the token limit (caption_row marks them)
    return {**metrics, "count": len(scored), "failed": len(records) - len(scored), "truncated": truncated}, records
