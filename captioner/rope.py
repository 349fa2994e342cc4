"""Rotary position embedding (RoPE, Su et al. 2021) in the "rotate half" layout of Llama's Hugging Face weights
and litgpt, with a language model's rope scaling (Llama 3's "llama3" type, linear). Applied to the self-attention's
queries and keys only: image keys carry no position."""

from __future__ import annotations

import math

import torch
from torch import nn

from captioner.config import CaptionerConfig

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin, each (T, hs) for the positions of a forward call


def inverse_frequencies(head_size: int, base: float, adjustments: dict[str, float] | None = None) -> torch.Tensor:
    """(head_size // 2,) rotation frequencies, rescaled as `adjustments` says (`CaptionerConfig.rope_adjustments`)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size))
    if adjustments is None:
        return inv_freq
    factor = adjustments["factor"]
    if "original_max_seq_len" not in adjustments:  # linear: every position divided by the factor
        return inv_freq / factor
    # Llama 3: long wavelengths slowed by `factor`, short ones kept, those between interpolated smoothly
    old, low = adjustments["original_max_seq_len"], adjustments["low_freq_factor"]
    high = adjustments["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """cos/sin tables (block_size, hs) for every position, computed (not stored in a state dict)."""

    cos: torch.Tensor  # registered buffers
    sin: torch.Tensor

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        """(Re)compute the tables, also after a model built on the meta device is loaded (as timm's modules do)."""
        c = self.config
        device = self.cos.device
        inv_freq = inverse_frequencies(c.heads().head_size, c.rope_base, c.rope_adjustments).to(device)
        freqs = torch.arange(c.block_size, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)  # (block_size, hs)
        self.cos, self.sin = angles.cos(), angles.sin()

    def forward(self, start: int | torch.Tensor, length: int) -> Rope:
        """cos, sin of positions [start, start + length), each (length, hs); a tensor `start` (0-dim, long) indexes
        the tables without reading it on the host."""
        if isinstance(start, torch.Tensor):
            index = start + torch.arange(length, device=self.cos.device)  # (length,)
            return self.cos.index_select(0, index), self.sin.index_select(0, index)
        return self.cos[start : start + length], self.sin[start : start + length]


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """(B, nh, T, hs) rotated by the (T, hs) angles: x * cos + rotate_half(x) * sin, in x's dtype."""
    cos, sin = (t.to(x.dtype) for t in rope)
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
