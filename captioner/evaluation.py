"""Evaluating a model package on the built-in shapes data: exact match, attribute accuracy, image-blind control."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from captioner.data.shapes import make_scene, score
from captioner.generate import GenerationConfig, generate
from captioner.inference import model_transform
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer


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
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Caption `count` scenes of `split` and score them.

    Args:
        blind: the image-blind control: each image's memory is replaced by the next image's in the batch
            (a cyclic shift), so a model that really reads the image through cross-attention scores near zero.
    Returns:
        metrics and one prediction record per scene (id, caption, references, objects left to right).
    """
    transform = model_transform(model)
    device = next(model.parameters()).device
    scenes = [make_scene(split, i, holdout) for i in range(count)]
    captions: list[str] = []
    for start in tqdm(range(0, count, batch_size), desc=f"captioning {split}", disable=not progress, unit="batch"):
        chunk = scenes[start : start + batch_size]
        images = torch.stack([transform(s.image) for s in chunk]).to(device)
        memory = model.encode(images)  # (B, N, D)
        if blind:
            memory = memory.roll(1, dims=0)
        hyps = generate(model, None, tokenizer, generation, memory=memory)
        captions.extend(tokenizer.decode(h[0].tokens) for h in hyps)
    metrics = score(captions, [s.objects for s in scenes])
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
