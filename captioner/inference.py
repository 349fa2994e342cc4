"""THE captioning core: a batch of images (or their encoder memory) -> captions with scores, tokens and n-best.

Everything that captions goes through `caption_batch`: `captioner caption` (`caption_files`, streaming files to
JSONL/CSV), `captioner evaluate`, validation during training, and the Python API (`caption`). Images are
preprocessed with the model's own recorded preprocessing (`model.preprocessing`), as in training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.data.images import DEFAULT_MAX_PIXELS, ImageFiles, load_rgb, to_rgb
from captioner.generate import GenerationConfig, Hypothesis, generate
from captioner.model import Captioner
from captioner.outputs import OutputError, OutputWriter
from captioner.ranks import Ranks
from captioner.tokenizer import CaptionTokenizer


@dataclass
class Caption:
    """One image's caption: the best hypothesis, and every returned one (best first) in `n_best`."""

    text: str
    score: float
    tokens: list[int]  # generated token ids, without BOS and EOS
    n_best: list[tuple[str, float]] = field(default_factory=list)
    truncated: bool = False  # the best hypothesis hit the token limit before its EOS: the caption may be cut


def to_caption(tokenizer: CaptionTokenizer, hyps: list[Hypothesis]) -> Caption:
    n_best = [(tokenizer.decode(h.tokens), h.score) for h in hyps]
    return Caption(n_best[0][0], hyps[0].score, hyps[0].tokens, n_best, hyps[0].truncated)


@torch.inference_mode()
def caption_batch(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    images: torch.Tensor | None = None,
    generation: GenerationConfig | None = None,
    memory: torch.Tensor | None = None,
) -> list[Caption]:
    """Captions of (B, 3, H, W) preprocessed images, or of their memory (B, N, D) from `model.encode`."""
    return [to_caption(tokenizer, h) for h in generate(model, images, tokenizer, generation, memory)]


def caption_row(path: str, caption: Caption) -> dict[str, Any]:
    """The output row of `captioner caption` (and of evaluate's predictions) for one image; a score that is not
    finite is a bug (the decoding options are range-checked so that none can be), never written as NaN."""
    if not all(math.isfinite(s) for s in (caption.score, *(s for _, s in caption.n_best))):
        raise RuntimeError(f"{path}: decoding gave a score that is not finite ({caption.score}); please report this")
    row: dict[str, Any] = {"path": path, "caption": caption.text, "score": round(caption.score, 4)}
    if len(caption.n_best) > 1:
        row["n_best"] = [{"caption": c, "score": round(s, 4)} for c, s in caption.n_best]
    if caption.truncated:
        row["truncated"] = True  # cut by the token limit (--max-new-tokens or the model's block size)
    return row


def caption_items(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    items: list[dict[str, Any]],
    generation: GenerationConfig | None = None,
    attention_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """`ImageFiles` items -> one row per item, in order: a caption row, or {"path", "error"} for a bad file."""
    good = [it for it in items if "image" in it]
    rows = {id(it): {"path": it["path"], "error": it["error"]} for it in items if "error" in it}
    if good:
        device = next(model.parameters()).device
        images = torch.stack([it["image"] for it in good]).to(device)  # (B, 3, H, W)
        with torch.inference_mode():
            memory = model.encode(images)  # once, for the captions and the attention maps
        captions = caption_batch(model, tokenizer, generation=generation, memory=memory)
        rows.update({id(it): caption_row(it["path"], c) for it, c in zip(good, captions, strict=True)})
        if attention_dir is not None:
            from captioner.viz import save_attention_figures

            paths, tokens = [it["path"] for it in good], [c.tokens for c in captions]
            save_attention_figures(model, tokenizer, images, paths, tokens, attention_dir, memory=memory)
    return [rows[id(it)] for it in items]


def file_loader(model: Captioner, paths: list[str], batch_size: int, workers: int, max_pixels: int) -> DataLoader:
    """Batches of `ImageFiles` items (lists of dicts), decoded by `workers` processes with the model's transform."""
    dataset = ImageFiles(paths, model.preprocessing.eval_transform(), max_pixels)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}[precision]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--precision 16 needs a GPU; use --precision bf16 or 32 on the CPU")
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class CaptionRun:
    captioned: int = 0
    failed: int = 0
    skipped: int = 0
    truncated: int = 0  # captions cut by the token limit


def caption_files(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    paths: list[str],
    output: Path | None,
    generation: GenerationConfig | None = None,
    batch_size: int = 32,
    workers: int = 2,
    precision: str = "32",
    resume: bool = False,
    attention_dir: Path | None = None,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    ranks: Ranks | None = None,
) -> CaptionRun:
    """Caption `paths`, writing rows to `output` batch by batch (printing them when `output` is None).

    With `ranks` (`captioner.ranks.launch`), every process calls this with the same arguments: each captions its
    share and rank 0 writes everyone's rows in input order; the returned counts are the same on every rank."""
    ranks = ranks or Ranks.single()
    run = CaptionRun()
    writer, refused = None, None
    if output is not None and ranks.rank == 0:
        try:
            writer = OutputWriter(output, resume)  # locks the output for the run
        except ValueError as err:  # OutputError: said on every rank, so that none waits for rank 0
            refused = str(err)
    done, refused = ranks.broadcast((writer.done if writer is not None else set(), refused))
    if refused:
        raise OutputError(refused)
    todo = [p for p in paths if p not in done]
    run.skipped = len(paths) - len(todo)
    device = next(model.parameters()).device
    mine = ranks.share(todo)
    batches = -(-len(todo[:: ranks.world]) // batch_size)  # rank 0's share is the longest: every rank loops as often
    bar = tqdm(total=len(todo), unit="img", desc="captioning", disable=not progress or ranks.rank != 0)
    try:
        with torch.inference_mode(), autocast(device, precision):
            loader = iter(file_loader(model, mine, batch_size, workers, max_pixels))
            for _ in range(batches):
                items = next(loader, [])
                rows = ranks.merge(caption_items(model, tokenizer, items, generation, attention_dir))
                run.failed += sum("error" in r for r in rows)
                run.captioned += sum("error" not in r for r in rows)
                run.truncated += sum(bool(r.get("truncated")) for r in rows)
                if writer is not None:
                    writer.write(rows)
                elif output is None and ranks.rank == 0:
                    for r in rows:
                        tqdm.write(f"{r['path']}\t{r.get('caption', '')}\t{r.get('score', r.get('error', ''))}")
                bar.update(len(rows))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return run


def caption(
    images: Sequence[str | Path | Image.Image],
    model: str | Path | Captioner,
    tokenizer: CaptionTokenizer | None = None,
    generation: GenerationConfig | None = None,
    batch_size: int = 32,
    device: str = "auto",
) -> list[Caption]:
    """Caption image files or PIL images in one call: `captioner.caption(["a.jpg"], model="runs/.../model")`.

    Args:
        model: a model package folder, or a loaded `Captioner` (then pass its `tokenizer`).
        generation: decoding options (greedy by default; see `GenerationConfig`).
    Returns:
        one `Caption` per image (`.text`, `.score`, `.n_best`), in order.
    """
    if not isinstance(model, Captioner):
        model, tokenizer = Captioner.from_pretrained(model, map_location=resolve_device(device))
    if tokenizer is None:
        raise ValueError("caption(model=<a Captioner>) needs its tokenizer: pass tokenizer=")
    transform = model.preprocessing.eval_transform()
    param = next(model.parameters())
    out: list[Caption] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pil = [to_rgb(im) if isinstance(im, Image.Image) else load_rgb(im) for im in chunk]
        batch = torch.stack([transform(im) for im in pil]).to(param.device)  # (B, 3, H, W)
        out.extend(caption_batch(model, tokenizer, batch, generation))
    return out
