"""A model package's Hub model card: huggingface_hub's metadata (library, task, tags, metrics as a model-index)
above how to use the model and how it was trained, read from the package's own config.json and training.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from captioner.config import CaptionerConfig

TASK = "image-to-text"


def model_card(package: Path, repo_id: str, report: dict[str, Any] | None = None, license: str | None = None) -> str:
    """The README.md the Hub shows for `package` pushed as `repo_id`; `report` is an `evaluate --report`."""
    config = CaptionerConfig.load(package / "config.json")
    training = _read_json(package / "training.json") or {}
    data = training.get("data", {})
    results = _eval_results(report) if report else None
    card_data = ModelCardData(
        library_name="captioner",
        pipeline_tag=TASK,
        tags=["image-captioning", "vision-encoder-decoder", "cross-attention", "timm", config.encoder_name],
        license=license,
        model_name=repo_id,
        eval_results=results,
        base_model=config.decoder_init_from
        if config.decoder_init_from and "/" not in config.decoder_init_from
        else None,
    )
    layers = f"{config.n_layer} layer{'s' if config.n_layer > 1 else ''}"
    body = "\n".join([
        f"# {repo_id}",
        "",
        "An image captioning model made with captioner: a timm ViT "
        f"(`{config.encoder_name}` at {config.encoder_img_size or 'its own'} px) turns the image into patch tokens, "
        f"and a GPT-style decoder ({layers} x {config.n_embd} wide, {config.vocab_size:,} tokens) "
        "writes the caption, looking at the patches through cross-attention.",
        "",
        "## Use it",
        "",
        "With captioner installed (`pip install -e .` in a clone of its repository):",
        "",
        "```bash",
        f"captioner caption {repo_id} photo.jpg            # greedy; --num-beams 3 for beam search",
        "```",
        "",
        "```python",
        "import captioner",
        f'captions = captioner.caption(["photo.jpg"], model="{repo_id}")',
        "print(captions[0].text, captions[0].score)",
        "```",
        "",
        "## Training",
        "",
        *_training_lines(training, data),
        "",
        *(_evaluation_lines(report) if report else ["Not evaluated when pushed (`captioner push --report` adds it)."]),
        "",
    ])  # fmt: skip
    return ModelCard.from_template(card_data, template_str="---\n{{ card_data }}\n---\n\n" + body).content


def _training_lines(training: dict[str, Any], data: dict[str, Any]) -> list[str]:
    if not training:
        return ["The package records no training.json."]
    source = data.get("source", "unknown")
    described = ", ".join(f"{k}: {v}" for k, v in data.items() if k != "source")
    lines = [
        f"- {training.get('steps', '?')} optimiser steps on `{source}` data" + (f" ({described})" if described else "")
    ]
    if source == "shapes":
        lines.append("- the built-in shapes scenes: drawn on the fly, captions name each object's size, colour and "
                     "shape left to right (`captioner shapes` writes them to disk)")  # fmt: skip
    lines.append("- training.json in this repo holds the record `captioner fit` wrote")
    return lines


def _evaluation_lines(report: dict[str, Any]) -> list[str]:
    data, metrics = report.get("data", {}), _numbers(report.get("metrics", {}))
    where = f"`{data.get('format', '?')}` data, split `{data.get('split', '?')}`, {data.get('count', '?')} images"
    decoding = report.get("decoding", {})
    how = f"beam search, {decoding['num_beams']} beams" if decoding.get("num_beams", 1) > 1 else "greedy decoding"
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return ["## Evaluation", "", f"On {where}, {how} (`captioner evaluate --report`):", "", "| metric | value |",
            "|---|---:|", *rows]  # fmt: skip


def _eval_results(report: dict[str, Any]) -> list[EvalResult]:
    data = report.get("data", {})
    fmt = data.get("format", "unknown")
    name = "captioner shapes (built-in)" if fmt == "shapes" else Path(str(data.get("path", fmt))).name
    return [
        EvalResult(
            task_type=TASK,
            dataset_type=f"captioner-{fmt}",
            dataset_name=name,
            dataset_split=data.get("split"),
            metric_type=metric,
            metric_value=value,
        )  # fmt: skip
        for metric, value in _numbers(report.get("metrics", {})).items()
    ]


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The scores of a report (not its counts of images and truncated captions)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k not in ("count", "truncated")}


def _hub_name(decoder_init_from: str | None) -> str | None:
    """The GPT-2 the decoder started from, when it is a Hub name (a local folder is not)."""
    if decoder_init_from and not Path(decoder_init_from).exists():
        return decoder_init_from
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
