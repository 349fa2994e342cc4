"""What the benchmarks share: timing two callables side by side, a plain AdamW training step."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def add_size_args(parser: argparse.ArgumentParser) -> None:
    """The model and decoding sizes of the benchmarks against Hugging Face (ViT-tiny at 224 px, a 4 x 256 decoder)."""
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--enc-width", type=int, default=192)
    parser.add_argument("--enc-layers", type=int, default=12)
    parser.add_argument("--enc-heads", type=int, default=3)
    parser.add_argument("--dec-width", type=int, default=256)
    parser.add_argument("--dec-layers", type=int, default=4)
    parser.add_argument("--dec-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per row (median), after a warm-up")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_pair(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of `repeats` calls of each, after a warm-up call (see `timed_all`)."""
    ta, tb = timed_all([a, b], repeats)
    return ta, tb


def timed_all(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds of `repeats` calls of each of `fns`, after a warm-up call of each; the calls alternate so
    that drifts in the machine's speed hit every side alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def train_step_fn(model: torch.nn.Module, step: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        loss = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run
