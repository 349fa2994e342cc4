"""The decoder step of the decoding loops, as `GenerationConfig` asks: eager (the default: the position a Python int,
self-attention over the cache's slice written so far, so its shapes grow every step), static (the position a 0-dim
tensor, self-attention over the cache's whole length with a length mask, so every step has the same shapes and
nothing is read on the host), or static and compiled once (`torch.compile(fullgraph=True)`: one graph serves every
step of a call, and every call of the same shapes)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from captioner.decoding import GenerationConfig, step_logits
from captioner.model import Captioner

StepLogits = Callable[[Captioner, torch.Tensor, list, torch.Tensor], torch.Tensor]


@functools.cache
def compiled_step_logits() -> StepLogits:
    """`step_logits` compiled as one graph (a graph break is an error) by inductor, for the shapes it meets (not
    dynamic: each new shape compiles once); made once per process, so that its graphs serve every call."""
    return torch.compile(step_logits, fullgraph=True, dynamic=False)


class DecodeStep:
    """(R, 1) newest tokens at step `step` -> (R, V) float logits, through the step `config` asks for (see the
    module's docstring); the static steps write the position into a tensor they keep (a fill, not a host read)."""

    def __init__(self, model: Captioner, config: GenerationConfig, device: torch.device) -> None:
        self.model = model
        self.static = config.static or config.compile
        self.logits: StepLogits = compiled_step_logits() if config.compile else step_logits
        self.position = torch.zeros((), dtype=torch.long, device=device)

    def __call__(self, last: torch.Tensor, kv: list, step: int) -> torch.Tensor:
        if not self.static:
            return step_logits(self.model, last, kv, step)
        self.position.fill_(step)
        return self.logits(self.model, last, kv, self.position)
