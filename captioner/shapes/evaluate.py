"""Evaluating a model package on the built-in shapes data: exact match, attribute accuracy, image-blind control."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm import tqdm

from captioner.decoding import CaptionModel
from captioner.generate import GenerationConfig
from captioner.inference import Caption, caption_batch
from captioner.shapes.scenes import make_scene
from captioner.shapes.scoring import score
from captioner.tokenizer import CaptionTokenizer


def scene_batches(
    model: CaptionModel, scenes: Sequence, batch_size: int, progress: bool = False, desc: str = ""
) -> Iterator[tuple[Sequence, torch.Tensor]]:
    """(scenes, image memory (B, N, D)) batch by batch, images through the model's own preprocessing."""
    transform = model.preprocessing.eval_transform()
    device = model.device
    for start in tqdm(range(0, len(scenes), batch_size), desc=desc, disable=not progress, unit="batch"):
        chunk = scenes[start : start + batch_size]
        yield chunk, model.encode(torch.stack([transform(s.image) for s in chunk]).to(device))


@torch.inference_mode()
def evaluate_shapes(
    model: CaptionModel,
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
        blind: the image-blind control: scene i is captioned from the image of scene i + 1 (another scene, in
            every batch and for every count, one included), so a model that really reads the image through
            cross-attention scores near chance.
    Returns:
        metrics and one prediction record per scene (id, caption, references, objects left to right).
    """
    scenes = [make_scene(split, i, holdout) for i in range(count)]
    seen = [*scenes[1:], make_scene(split, count, holdout)] if blind else scenes  # the images the model sees
    found: list[Caption] = []
    for _, memory in scene_batches(model, seen, batch_size, progress, f"captioning {split}"):
        found.extend(caption_batch(model, tokenizer, generation=generation, memory=memory))
    captions = [c.text for c in found]
    metrics: dict[str, Any] = score(captions, [s.objects for s in scenes])
    metrics["truncated"] = sum(c.truncated for c in found)  # captions cut by the token limit
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
            **({"truncated": True} if f.truncated else {}),
        }
        for s, c, f in zip(scenes, captions, found, strict=True)
    ]
    return metrics, records
