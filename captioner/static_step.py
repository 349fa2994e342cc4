"""The decoder step of the decoding loops, as `GenerationConfig` asks: eager (the default: the position a Python int,
self-attention over the cache's slice written so far, so its shapes grow every step), static (the position a 0-dim
tensor, self-attention over the cache's whole length with a length mask, so every step has the same shapes and
nothing is read on the host), or static and compiled once (`torch.compile(fullgraph=True)`: one graph serves every
step of a call, and every call of the same shapes)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from captioner.decoder import TextDecoder
from captioner.decoding import GenerationConfig, step_logits

StepLogits = Callable[[TextDecoder, torch.Tensor, list, torch.Tensor], torch.Tensor]


@functools.cache
def compiled_step_logits() -> StepLogits:
    """`step_logits` compiled as one graph (a graph break is an error) by inductor, for the shapes it meets (not
    dynamic: each new shape compiles once); made once per process, so that its graphs serve every call."""
    return torch.compile(step_logits, fullgraph=True, dynamic=False)


class DecodeStep:
    """The PyTorch decoder as the decoding loops drive it (`captioner.decoding.Steps`): the image keys/values of
    every cross-attention layer computed once from the memory, the KV cache of the rows, and the step `config` asks
    for (see the module's docstring); the static steps write the position into a tensor they keep (a fill, not a
    host read)."""

    def __init__(self, decoder: TextDecoder, memory: torch.Tensor, config: GenerationConfig) -> None:
        """`memory` (B, N, D) from `Captioner.encode`."""
        self.decoder = decoder
        self.kv = decoder.image_kv(memory)  # once per image, per call; shared by its rows by broadcasting
        self.images, self.device = memory.size(0), memory.device
        self.vocab_size = decoder.wte.num_embeddings
        self.static = config.static or config.compile
        self.logits: StepLogits = compiled_step_logits() if config.compile else step_logits
        self.position = torch.zeros((), dtype=torch.long, device=memory.device)

    def start(self, rows: int, length: int) -> None:
        self.decoder.set_kv_cache(rows, length)

    def __call__(self, last: torch.Tensor, step: int) -> torch.Tensor:
        if not self.static:
            return step_logits(self.decoder, last, self.kv, step)
        self.position.fill_(step)
        return self.logits(self.decoder, last, self.kv, self.position)

    def reorder(self, rows: torch.Tensor) -> None:
        self.decoder.reorder_kv_cache(rows)

    def close(self) -> None:
        self.decoder.clear_kv_cache()
