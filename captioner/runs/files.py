"""Captioning image files: decoded in DataLoader workers with the model's transform, captioned batch by batch
through the core (`captioner.inference.caption_batch`), a row per file (a caption or an error) streamed to a
JSONL/CSV output or printed, on one process or many (`captioner.runs.ranks`), resuming an output it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.data.images import ImageFiles
from captioner.decoding import CaptionModel
from captioner.device import autocast
from captioner.generate import GenerationConfig
from captioner.inference import caption_batch
from captioner.options import BATCH_SIZE, MAX_IMAGE_PIXELS, PRECISION, check_options, option
from captioner.runs.ranks import Ranks
from captioner.runs.writers import OutputWriter, caption_row
from captioner.tokenizer import CaptionTokenizer


@dataclass
class RunOptions:
    """How a run over files goes (the flags of `captioner caption`, and the shared ones of `evaluate`, are made from
    the fields that declare an option)."""

    batch_size: int = BATCH_SIZE.field()
    workers: int = option(
        2, "DataLoader worker processes decoding images (0: in this process)", low=0, high=1024, why="each is a process"
    )
    precision: str = PRECISION.field()
    max_image_pixels: int = MAX_IMAGE_PIXELS.field()
    resume: bool = False  # skip the images already in the output, append the rest (only to an output a run wrote)
    attention_dir: Path | None = None  # write one cross-attention figure per image here
    progress: bool = True  # a progress bar on stderr

    def validate(self) -> None:
        """ArgumentError naming the first option out of its range or choices."""
        check_options(self)


@dataclass
class CaptionRun:
    captioned: int = 0
    failed: int = 0
    skipped: int = 0
    truncated: int = 0  # captions cut by the token limit


def file_loader(model: CaptionModel, paths: list[str], batch_size: int, workers: int, max_pixels: int) -> DataLoader:
    """Batches of `ImageFiles` items (lists of dicts), decoded by `workers` processes with the model's transform."""
    dataset = ImageFiles(paths, model.preprocessing.eval_transform(), max_pixels)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list)


def caption_items(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    items: list[dict[str, Any]],
    generation: GenerationConfig | None = None,
    attention_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """`ImageFiles` items -> one row per item, in order: a caption row, or {"path", "error"} for a bad file."""
    good = [it for it in items if "image" in it]
    rows = {id(it): {"path": it["path"], "error": it["error"]} for it in items if "error" in it}
    if good:
        device = model.device
        images = torch.stack([it["image"] for it in good]).to(device)  # (B, 3, H, W)
        with torch.inference_mode():
            memory = model.encode(images)  # once, for the captions and the attention maps
        captions = caption_batch(model, tokenizer, generation=generation, memory=memory)
        rows.update({id(it): caption_row(it["path"], c) for it, c in zip(good, captions, strict=True)})
        if attention_dir is not None:
            from captioner.model import Captioner
            from captioner.viz import save_attention_figures

            assert isinstance(model, Captioner), "attention maps need the PyTorch model (refused with --runtime onnx)"

            paths, tokens = [it["path"] for it in good], [c.tokens for c in captions]
            save_attention_figures(model, tokenizer, images, paths, tokens, attention_dir, memory=memory)
    return [rows[id(it)] for it in items]


def caption_files(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    paths: list[str],
    *,
    output: Path | None = None,
    generation: GenerationConfig | None = None,
    options: RunOptions | None = None,
    ranks: Ranks | None = None,
) -> CaptionRun:
    """Caption `paths`, writing rows to `output` batch by batch (printing them when `output` is None).

    With `ranks` (`captioner.runs.ranks.launch`), every process calls this with the same arguments: each captions its
    share and rank 0 writes everyone's rows in input order; the returned counts are the same on every rank."""
    options, ranks = options or RunOptions(), ranks or Ranks.single()
    options.validate()
    writer, refused = None, None
    if output is not None and ranks.rank == 0:
        try:
            writer = OutputWriter(output, options.resume)  # locks the output for the run
        except (ValueError, OSError) as err:  # said on every rank, so that none waits for rank 0
            refused = err
    done, refused = ranks.broadcast((writer.done if writer is not None else set(), refused))
    if refused is not None:
        raise refused
    todo = [p for p in paths if p not in done]
    run = CaptionRun(skipped=len(paths) - len(todo))
    try:
        _caption_into(model, tokenizer, todo, generation, options, ranks, writer, run)
    finally:
        if writer is not None:
            writer.close()
    return run


def _caption_into(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    todo: list[str],
    generation: GenerationConfig | None,
    options: RunOptions,
    ranks: Ranks,
    writer: OutputWriter | None,
    run: CaptionRun,
) -> None:
    """Every rank's share of `todo`, batch by batch: rows merged in input order, written (or printed) by rank 0."""
    device = model.device
    batches = -(-len(todo[:: ranks.world]) // options.batch_size)  # rank 0's share is the longest: all loop as often
    bar = tqdm(total=len(todo), unit="img", desc="captioning", disable=not options.progress or ranks.rank != 0)
    loader = file_loader(model, ranks.share(todo), options.batch_size, options.workers, options.max_image_pixels)
    with bar, torch.inference_mode(), autocast(device, options.precision):
        items = iter(loader)
        for _ in range(batches):
            rows = ranks.merge(caption_items(model, tokenizer, next(items, []), generation, options.attention_dir))
            run.failed += sum("error" in r for r in rows)
            run.captioned += sum("error" not in r for r in rows)
            run.truncated += sum(bool(r.get("truncated")) for r in rows)
            if writer is not None:
                writer.write(rows)
            elif ranks.rank == 0:  # no output: the rows are printed
                for r in rows:
                    tqdm.write(f"{r['path']}\t{r.get('caption', '')}\t{r.get('score', r.get('error', ''))}")
            bar.update(len(rows))
