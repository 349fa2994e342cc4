"""The decoder's normalisation layers, chosen by the config: LayerNorm (GPT-2) or RMSNorm (Llama; Gemma's 1 + w)."""

from __future__ import annotations

import torch
from torch import nn

from captioner.config import CaptionerConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019) computed in float32, as Llama's and litgpt's; with
    `add_unit_offset` the scale is 1 + weight, the weight starting at 0 (Gemma)."""

    def __init__(self, size: int, eps: float = 1e-6, add_unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size) if add_unit_offset else torch.ones(size))
        self.eps = eps
        self.add_unit_offset = add_unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., size) -> (..., size)."""
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        weight = (1 + self.weight.float()) if self.add_unit_offset else self.weight.float()
        return (x * weight).to(dtype)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight) if self.add_unit_offset else nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, add_unit_offset={self.add_unit_offset}"


def make_norm(config: CaptionerConfig, size: int | None = None) -> nn.Module:
    """The config's norm over `size` features (default: the decoder width)."""
    size = config.n_embd if size is None else size
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(size, config.norm_eps, config.norm_add_unit_offset)
    return nn.LayerNorm(size, eps=config.norm_eps, bias=config.bias)


NORM_TYPES = (nn.LayerNorm, RMSNorm)  # what counts as a norm (fine-tuning policies, weight decay)
