"""What the benchmarks share: timing two callables side by side, a plain AdamW training step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_pair(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of `repeats` calls of each, after a warm-up call; calls alternate so that drifts in the
    machine's speed hit both sides alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def train_step_fn(model: torch.nn.Module, step: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        loss = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run
