"""`python scripts/benchmark.py data`: images/s of the data pipeline alone, against the shapes training step."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from benchmarks.common import train_step_fn
from captioner.config import CaptionerConfig
from captioner.data import PairsDataModule, Split
from captioner.model import Captioner
from captioner.shapes import ShapesDataModule, write_imagefolder
from captioner.train.settings import TokenizerSource
from captioner.train.vocabulary import resolve_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def loader_rate(loader, batches: int) -> float:
    """Images per second over `batches` batches, after one warm-up batch."""
    it = iter(loader)
    next(it)
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        n += next(it)["images"].size(0)
    return n / (time.perf_counter() - start)


def train_rate(cfg: CaptionerConfig, batch: dict, steps: int) -> float:
    model = Captioner(cfg)
    step = train_step_fn(model, lambda: model.loss(batch["images"], batch["input_ids"], batch["labels"]))
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["images"].size(0) / (time.perf_counter() - start)


def demo_config() -> CaptionerConfig:
    """The demo's model, as configs/shapes.yaml (its one definition) describes it."""
    model = yaml.safe_load((ROOT / "configs/shapes.yaml").read_text(encoding="utf-8"))["model"]
    return CaptionerConfig.from_dict(model["config"])


def shapes_rows(args: argparse.Namespace) -> list[tuple[str, float]]:
    dm = ShapesDataModule(batch_size=64, num_workers=args.workers)
    tokenizer = resolve_tokenizer(TokenizerSource(vocab_size=384), None, None, dm.training_texts)
    cfg = replace(demo_config(), vocab_size=tokenizer.vocab_size)
    dm.connect(tokenizer, Captioner(cfg).preprocessing)
    dm.setup("fit")
    loader = dm.train_dataloader()
    return [
        (f"shapes: render + timm transform, {args.workers} workers", loader_rate(loader, args.batches)),
        ("shapes: training step (fwd + bwd + AdamW), batch 64", train_rate(cfg, next(iter(loader)), 10)),
    ]


def write_jpeg_folder(folder: Path, count: int) -> Path:
    """An imagefolder of `count` shapes scenes saved as 640x480 JPEGs (quality 90), like photos."""
    return write_imagefolder(folder, "train", count, size=(640, 480), suffix="jpg")


def jpeg_rows(args: argparse.Namespace) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_jpeg_folder(Path(tmp) / "src", args.jpegs)
        dm = PairsDataModule(train=str(folder), batch_size=32, num_workers=args.workers, split=Split(0.01))
        tokenizer = resolve_tokenizer(TokenizerSource(), None, None, dm.training_texts)
        dm.connect(tokenizer, Captioner(CaptionerConfig(encoder_name="vit_tiny_patch16_224")).preprocessing)
        dm.setup("fit")
        batches = max(1, min(args.batches, len(dm.datasets["train"]) // 32 - 1))
        return [
            (
                f"640x480 JPEG -> 224 px (decode + timm transform), {args.workers} workers",
                loader_rate(dm.train_dataloader(), batches),
            )
        ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py data", description=__doc__)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--jpegs", type=int, default=512, help="JPEG files to write for the 224 px row")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"| {'row':<62} | images/s |\n|{'-' * 64}|---------:|")
    for name, rate in [*shapes_rows(args), *jpeg_rows(args)]:
        print(f"| {name:<62} | {rate:8.0f} |")
    return 0
