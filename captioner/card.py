"""A model package's Hub model card: huggingface_hub's metadata (library, task, tags, metrics as a model-index)
above how to use the model and how it was trained (objective, start package, optimiser, data), read from the
package's own config.json and training.json (`captioner.package`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from captioner.config import CaptionerConfig
from captioner.package import TRAINING_FILE, Origin, TrainingInfo, read_config, read_training

TASK = "image-text-to-text"  # the task transformers 5 serves (it removed "image-to-text"); export-hf runs in it


def model_card(package: Path, repo_id: str, report: dict[str, Any] | None = None, license: str | None = None) -> str:
    """The README.md the Hub shows for `package` pushed as `repo_id`; `report` is an `evaluate --report`."""
    config = read_config(package)
    training = read_training(package)
    start = training.started_from if training else None
    results = _eval_results(report) if report else None
    card_data = ModelCardData(
        library_name="captioner",
        pipeline_tag=TASK,
        tags=["image-captioning", "vision-encoder-decoder", "cross-attention", "timm", config.encoder_name],
        license=license,
        model_name=repo_id,
        eval_results=results,
        base_model=_base_model(start, config.decoder_init_from),
    )
    evaluation = (
        _evaluation_lines(report) if report else ["Not evaluated when pushed (`captioner push --report` adds it)."]
    )
    training_lines = _training_lines(training, config)
    lines = [f"# {repo_id}", "", _summary(config), "", *_usage_lines(repo_id), "", "## Training", "", *training_lines]
    body = "\n".join([*lines, "", *evaluation, ""])
    return ModelCard.from_template(card_data, template_str="---\n{{ card_data }}\n---\n\n" + body).content


def _summary(config: CaptionerConfig) -> str:
    layers = f"{config.n_layer} layer{'s' if config.n_layer > 1 else ''}"
    return (
        "An image captioning model made with captioner: a timm ViT "
        f"(`{config.encoder_name}` at {config.encoder_img_size or 'its own'} px) turns the image into patch tokens, "
        f"and a {_decoder_kind(config)} decoder ({layers} x {config.n_embd} wide, {config.vocab_size:,} tokens) "
        "writes the caption, looking at the patches through cross-attention."
    )


def _usage_lines(repo_id: str) -> list[str]:
    return [
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
    ]


def _training_lines(training: TrainingInfo | None, config: CaptionerConfig) -> list[str]:
    if training is None:
        return [f"The package records no {TRAINING_FILE}."]
    data = training.data
    source = data.get("source", "unknown")
    described = ", ".join(f"{k}: {v}" for k, v in data.items() if k != "source")
    lines = [
        f"- {training.steps if training.steps is not None else '?'} optimiser steps on `{source}` data"
        + (f" ({described})" if described else "")
    ]
    if source == "shapes":
        lines.append(
            "- the built-in shapes scenes: drawn on the fly, captions name each object's size, colour and "
            "shape left to right (`captioner shapes` writes them to disk)"
        )
    if training.objective is None:  # a package from before these were recorded
        lines.append("- objective, start and optimiser settings: not recorded (trained by an older captioner)")
    else:
        lines += [f"- objective: {_objective(training)}", f"- started from: {_start(training.started_from, config)}"]
    if training.optimizer:
        lines.append("- optimiser settings: " + ", ".join(f"{k} {v}" for k, v in training.optimizer.items()))
    lines.append(f"- {TRAINING_FILE} in this repo holds the record `captioner fit` wrote")
    return lines


def _objective(training: TrainingInfo) -> str:
    o = training.objective
    if o is None or o.name != "scst":
        return "cross-entropy (next-token prediction on the reference captions)"
    return (
        f"SCST, self-critical sequence training: reward {o.reward}, baseline {o.baseline}, "
        f"{o.samples} sampled captions per image"
    )


def _start(origin: Origin | None, config: CaptionerConfig) -> str:
    if origin is None:
        parts = [f"timm's pretrained `{config.encoder_name}`"] if config.encoder_pretrained else []
        lm = config.decoder_init_from
        parts += [f"the pretrained language model `{lm}` as its decoder"] if lm else []
        return "no package: " + (" and ".join(parts) or "random weights")
    if origin.repo_id:
        at = f" at revision `{origin.revision}`" if origin.revision else ""
        commit = f" (commit `{origin.commit}`)" if origin.commit and origin.commit != origin.revision else ""
        return f"the model package [{origin.repo_id}](https://huggingface.co/{origin.repo_id}){at}{commit}"
    return f"the model package `{origin.path}`"


def _decoder_kind(config: CaptionerConfig) -> str:
    """GPT-style (LayerNorm, learned positions, GELU MLP) or Llama-style (RoPE), as its blocks are."""
    if (config.norm_class_name, config.positions, config.mlp_class_name) == ("LayerNorm", "learned", "GptNeoxMLP"):
        return "GPT-style"
    return "Llama-style" if config.positions == "rope" else "transformer"


def _base_model(start: Origin | None, decoder_init_from: str | None) -> str | None:
    """The Hub model this one was made from: the package it was fine-tuned from, else the language model its
    decoder started as (a Hub repo id such as `gpt2` or `org/name`; a local folder is not)."""
    from captioner.hub import is_repo_id

    if start is not None and start.repo_id:
        return start.repo_id
    return decoder_init_from if decoder_init_from and is_repo_id(decoder_init_from) else None


def _evaluation_lines(report: dict[str, Any]) -> list[str]:
    data, metrics = report.get("data", {}), _numbers(report.get("metrics", {}))
    where = f"`{data.get('format', '?')}` data, split `{data.get('split', '?')}`, {data.get('count', '?')} images"
    decoding = report.get("decoding", {})
    how = f"beam search, {decoding['num_beams']} beams" if decoding.get("num_beams", 1) > 1 else "greedy decoding"
    rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    return [
        "## Evaluation",
        "",
        f"On {where}, {how} (`captioner evaluate --report`):",
        "",
        "| metric | value |",
        "|---|---:|",
        *rows,
    ]


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
        )
        for metric, value in _numbers(report.get("metrics", {})).items()
    ]


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The scores of a report (not its counts of images and truncated captions)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k not in ("count", "truncated")}
