"""Measuring a model without moving its training state: `eval_mode(module)` runs a block with every submodule in
eval mode and gives each its own mode back afterwards (a frozen BatchNorm that was in eval mode stays there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block: BatchNorm uses and keeps its running statistics, dropout draws no random numbers;
    each submodule's `training` flag is restored on the way out, also after an error."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
