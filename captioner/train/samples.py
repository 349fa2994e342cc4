"""What validation reports about its captions: the data's own scores (`CaptionDataModule.score_captions`), caption
metrics, and a few sample captions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

from captioner.generate import GenerationConfig
from captioner.inference import caption_batch
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer

# the data's own scores of an epoch's captions: `CaptionDataModule.score_captions`, handed over by `train.connect`
DataScores = Callable[[str, list[dict[str, Any]]], dict[str, float]]


def caption_rows(
    model: Captioner, tokenizer: CaptionTokenizer, batch: dict[str, Any], generation: GenerationConfig
) -> list[dict[str, Any]]:
    """The captions of a validation/test/predict batch, with what scoring them needs (the example's index and
    references)."""
    captions = caption_batch(model, tokenizer, batch["images"], generation)
    return [
        {"index": i, "caption": c.text, "score": c.score, "references": refs}
        for i, c, refs in zip(batch["index"], captions, batch["references"], strict=True)
    ]


def report_captions(
    module: L.LightningModule,
    stage: str,
    outputs: list[dict[str, Any]],
    metrics_every: int,
    num_samples: int,
    data_scores: DataScores | None = None,
) -> None:
    """At the end of a validation/test epoch: log the scores of its captions (caption metrics every
    `metrics_every` epochs in validation, always in test) and, in validation, a few sample captions."""
    if not outputs:
        return
    with_metrics = metrics_every > 0 and (stage != "val" or module.current_epoch % metrics_every == 0)
    own = data_scores(stage, outputs) if data_scores is not None else {}
    for name, value in {**own, **caption_scores(outputs, with_metrics)}.items():
        module.log(f"{stage}/{name}", value, prog_bar=name in ("exact_match", "CIDEr-D"))
    if stage == "val" and not module.trainer.sanity_checking:
        log_samples(module, outputs[:num_samples])  # every rank with outputs: it holds a collective


def caption_scores(outputs: list[dict[str, Any]], with_metrics: bool) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D against the references, when `with_metrics`."""
    scores: dict[str, float] = {}
    if with_metrics:
        from captioner.metrics import caption_metrics

        scores.update(
            caption_metrics(
                {str(n): o["caption"] for n, o in enumerate(outputs)},
                {str(n): o["references"] for n, o in enumerate(outputs)},
            )
        )
    return scores


def log_samples(module: L.LightningModule, samples: list[dict[str, Any]]) -> None:
    """Print a few captions with their first reference, log them as TensorBoard text and append them to the
    run's samples.jsonl (rank 0). Call it on every rank: `trainer.log_dir` is a collective under DDP."""
    trainer = module.trainer
    log_dir = trainer.log_dir
    if not trainer.is_global_zero:
        return
    lines = [f"  [{s['index']}] {s['caption']!r}  (reference: {s['references'][0]!r})" for s in samples]
    module.print(f"step {module.global_step} sample captions:\n" + "\n".join(lines))
    experiment: Any = getattr(module.logger, "experiment", None)  # the logger's own object: any kind
    if hasattr(experiment, "add_text"):  # TensorBoard
        experiment.add_text("val/samples", "\n\n".join(lines), module.global_step)
    if log_dir:
        path = Path(log_dir) / "samples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps({"step": module.global_step, "index": s["index"], "caption": s["caption"]}) + "\n")
