"""`captioner caption` at scale: streaming DataLoader decode, batched generation, incremental JSONL/CSV output,
resume, one error row per unreadable file, bounded memory."""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioner.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, load_rgb
from captioner.data.transforms import Transform
from captioner.generate import GenerationConfig, generate
from captioner.inference import model_transform
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer

CSV_FIELDS = ["path", "caption", "score", "error", "n_best"]


def expand_inputs(items: list[str], list_file: str | None = None) -> list[str]:
    """Files, folders (every non-hidden file, recursively: non-images get an error row), globs, a list file."""
    out: list[str] = []
    if list_file:
        out.extend(line.strip() for line in Path(list_file).read_text(encoding="utf-8").splitlines() if line.strip())
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = (p for p in path.rglob("*") if p.is_file())
            out.extend(str(p) for p in sorted(files) if not any(part.startswith(".") for part in p.parts[-1:]))
        elif any(ch in item for ch in "*?[") and not path.exists():
            out.extend(sorted(glob.glob(item, recursive=True)))
        else:
            out.append(item)
    return out


class ImageFiles(Dataset):
    """Decodes one file per item in a DataLoader worker; a bad file gives {"path", "error"}."""

    def __init__(self, paths: list[str], transform: Transform, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.paths, self.transform, self.max_pixels = paths, transform, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            return {"path": path, "image": self.transform(load_rgb(path, self.max_pixels))}
        except ImageDecodeError as err:
            return {"path": path, "error": str(err)}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


class OutputWriter:
    """Appends rows to a .jsonl or .csv file and flushes them to disk after every batch."""

    def __init__(self, path: Path, append: bool) -> None:
        self.path, self.csv = path, path.suffix.lower() == ".csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and path.exists() and path.stat().st_size > 0)
        self.file = path.open("a" if append else "w", encoding="utf-8", newline="")
        if self.csv:
            self.writer = csv.DictWriter(self.file, fieldnames=CSV_FIELDS)
            if fresh:
                self.writer.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self.csv:
                flat = {**row, "n_best": json.dumps(row["n_best"], ensure_ascii=False) if "n_best" in row else ""}
                self.writer.writerow({k: flat.get(k, "") for k in CSV_FIELDS})
            else:
                self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def done_paths(path: Path) -> set[str]:
    """Paths already in an output file; a last line cut by a kill is dropped from the file."""
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if text and not text.endswith("\n"):  # the last row was cut: rewrite without it
            rows = rows[:-1]
            _rewrite_csv(path, rows)
        return {r["path"] for r in rows}
    good, paths = [], set()
    for line in text.splitlines():
        try:
            paths.add(json.loads(line)["path"])
            good.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    if text and (not text.endswith("\n") or len(good) != len(text.splitlines())):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in good), encoding="utf-8")
        tmp.replace(path)
    return paths


def _rewrite_csv(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


@dataclass
class CaptionRun:
    captioned: int = 0
    failed: int = 0
    skipped: int = 0


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}[precision]
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--precision 16 needs a GPU; use --precision bf16 or 32 on the CPU")
    return torch.autocast(device.type, dtype=dtype)


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
) -> CaptionRun:
    """Caption `paths`, writing rows to `output` as they come (printing them when `output` is None)."""
    run = CaptionRun()
    done = done_paths(output) if (output is not None and resume) else set()
    todo = [p for p in paths if p not in done]
    run.skipped = len(paths) - len(todo)
    device = next(model.parameters()).device
    loader = DataLoader(
        ImageFiles(todo, model_transform(model), max_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
    )
    writer = OutputWriter(output, append=resume) if output is not None else None
    bar = tqdm(total=len(todo), unit="img", desc="captioning", disable=not progress)
    try:
        with torch.inference_mode(), autocast(device, precision):
            for items in loader:
                rows = _caption_batch(model, tokenizer, items, generation, device, attention_dir, run)
                if writer is not None:
                    writer.write(rows)
                else:
                    for r in rows:
                        tqdm.write(f"{r['path']}\t{r.get('caption', '')}\t{r.get('score', r.get('error', ''))}")
                bar.update(len(items))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return run


def _caption_batch(model, tokenizer, items, generation, device, attention_dir, run) -> list[dict[str, Any]]:  # noqa: ANN001
    good = [it for it in items if "image" in it]
    rows: dict[str, dict[str, Any]] = {}
    for it in items:
        if "error" in it:
            rows[it["path"]] = {"path": it["path"], "error": it["error"]}
            run.failed += 1
    if good:
        images = torch.stack([it["image"] for it in good]).to(device)
        memory = model.encode(images)  # once, for the captions and the attention maps
        hyps = generate(model, None, tokenizer, generation, memory=memory)
        for it, h in zip(good, hyps, strict=True):
            row: dict[str, Any] = {
                "path": it["path"],
                "caption": tokenizer.decode(h[0].tokens),
                "score": round(h[0].score, 4),
            }
            if len(h) > 1:
                row["n_best"] = [{"caption": tokenizer.decode(x.tokens), "score": round(x.score, 4)} for x in h]
            rows[it["path"]] = row
            run.captioned += 1
        if attention_dir is not None:
            from captioner.viz import save_attention_figures

            paths, tokens = [it["path"] for it in good], [h[0].tokens for h in hyps]
            save_attention_figures(model, tokenizer, images, paths, tokens, attention_dir, memory=memory)
    return [rows[it["path"]] for it in items]
