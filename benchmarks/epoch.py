"""`python scripts/benchmark.py epoch`: wall time of real training epochs with a frozen encoder, run online vs from the
feature cache (`model.feature_cache`), through Lightning's Trainer on an imagefolder of 640x480 JPEGs.

Online, every epoch decodes and resizes each JPEG in the DataLoader workers and runs the frozen backbone
forward; cached, the first `fit` encodes each image once (reported as the fill) and every epoch reads bf16 patch
tokens from the memory-mapped cache. The last epoch's time is the steady state.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from benchmarks.data import write_jpeg_folder
from captioner.config import CaptionerConfig
from captioner.data import PairsDataModule, Split
from captioner.train import CaptionerModule, Finetuning, Optimizer, Speed, TokenizerSource, Validation, connect


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.setup_s = 0.0

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = self._now()  # callbacks run before the module's on_fit_start (the cache fill)

    def on_train_start(self, trainer, pl_module) -> None:
        self.setup_s = self._now() - self._fit_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = self._now()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(self._now() - self._start)


def run(args: argparse.Namespace, folder: Path, cache: Path, mode: str) -> EpochTimer:
    data = PairsDataModule(train=str(folder), batch_size=args.batch, num_workers=args.workers, split=Split(0.01))
    config = CaptionerConfig(
        encoder_name=args.encoder, n_layer=args.layers, n_head=args.width // 64, n_embd=args.width, block_size=64
    )
    torch.manual_seed(0)
    module = CaptionerModule(
        config,
        tokenizer=TokenizerSource(vocab_size=512),
        finetune=Finetuning(policy="freeze_encoder"),
        optimizer=Optimizer(warmup_steps=10),
        validation=Validation(generate_batches=0),
        speed=Speed(feature_cache=str(cache) if mode == "cached" else None, compile=args.compile),
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=args.epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[timer],
        devices=1,
        precision="bf16-mixed" if torch.cuda.is_available() else "32",
        default_root_dir=str(cache.parent),
    )
    connect(module, data, trainer)
    trainer.fit(module, data)
    return timer


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py epoch", description=__doc__)
    parser.add_argument("--images", type=int, default=4096, help="JPEGs to write (640x480)")
    parser.add_argument("--encoder", default="vit_base_patch16_224")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="model.compile: true in both runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = write_jpeg_folder(Path(tmp) / "jpegs", args.images)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - start:.0f} s")
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(
            f"device {device}; {args.encoder} (frozen) + {args.layers}x{args.width} decoder; batch {args.batch}, "
            f"{args.workers} workers, {args.epochs} epochs, compile {args.compile}"
        )
        print("| mode | setup incl. cache fill (s) | epoch times (s) | last epoch images/s |")
        print("|---|---:|---|---:|")
        last = {}
        for mode in ("frozen online", "cached"):
            timer = run(args, folder, Path(tmp) / "cache", mode.split()[0])
            last[mode] = timer.epochs[-1]
            n = int(args.images * 0.99) // args.batch * args.batch  # drop_last batches of the 99 % training split
            epochs = ", ".join(f"{t:.1f}" for t in timer.epochs)
            print(f"| {mode} | {timer.setup_s:.1f} | {epochs} | {n / timer.epochs[-1]:.0f} |")
        print(f"cached epoch is {last['frozen online'] / last['cached']:.2f}x faster than the frozen encoder online")
    return 0
