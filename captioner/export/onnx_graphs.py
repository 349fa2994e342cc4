"""The two graphs `captioner export-onnx` traces, as nn.Modules over a Captioner's own modules (sharing its
weights): the encoder (image -> memory and every cross-attention layer's keys/values) and the decoder step that
takes the past self-attention keys/values as tensors and returns them with the new positions appended (the merged
decoder of optimum / transformers.js: one graph for the first step, P = 0, and the steps with a past).

The library decodes over a preallocated KV cache written in place (`captioner.attention.KVCache`); a graph takes
its past as inputs instead, so each block's self-attention is swapped, in a shallow copy of the block, for
`PastSelfAttention`, which runs the same projections, norms, RoPE and `attend` on [past; new] keys/values. The rest
of the block (cross-attention, gates, MLPs, post norms) is the library's `Block.forward`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from captioner.attention import SelfAttention, attend
from captioner.decoder import Block, TextDecoder
from captioner.model import Captioner
from captioner.rope import Rope


class ImageGraph(nn.Module):
    """pixel_values (B, 3, H, W) -> memory (B, N, D), then each cross-attention layer's keys and values
    (B, ng, N, hs), flattened [k_0, v_0, k_1, v_1, ...] in block order."""

    def __init__(self, model: Captioner) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory = self.model.encode(pixel_values)  # (B, N, D)
        return (memory, *(t for kv in self.model.image_kv(memory) for t in kv))


class PastSelfAttention(nn.Module):
    """`SelfAttention` over [past; new] keys/values given as tensors: before a call `past` holds (B, ng, P, hs)
    keys and values and `mask` the (T, P + T) causal mask; after it `present` holds (B, ng, P + T, hs) each."""

    def __init__(self, attn: SelfAttention) -> None:
        super().__init__()
        self.attn = attn
        self.past: tuple[torch.Tensor, torch.Tensor] | None = None
        self.mask: torch.Tensor | None = None
        self.present: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, start: int | None = None, rope: Rope | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); `start` is unused (the positions are the past's length)."""
        a = self.attn
        assert self.past is not None and self.mask is not None, "set past and mask before the call"
        B, T, _ = x.shape
        q, k, v = a.qkv(x, rope)  # (B, nh, T, hs), (B, ng, T, hs) x 2
        k = torch.cat([self.past[0], k], dim=2)  # (B, ng, P + T, hs)
        v = torch.cat([self.past[1], v], dim=2)
        self.present = (k, v)
        y = attend(q, k, v, self.mask, scale=a.scale, softcap=a.softcap)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, a.sizes[0])
        return a.c_proj(y)


def with_past_attention(block: Block) -> Block:
    """A shallow copy of `block` (the same parameters) whose self-attention is a `PastSelfAttention`."""
    step = copy.copy(block)
    step._modules = dict(block._modules)
    step._modules["attn"] = PastSelfAttention(block.attn)
    return step


class DecoderStepGraph(nn.Module):
    """input_ids (B, T), the image keys/values of each cross-attention layer (B, ng, N, hs) flattened [k, v, ...],
    and each block's past self-attention keys/values (B, ng, P, hs) flattened [k_0, v_0, k_1, ...], P >= 0 ->
    logits (B, T, V) and each block's present keys/values (B, ng, P + T, hs), flattened the same way. The new
    tokens hold positions [P, P + T)."""

    def __init__(self, decoder: TextDecoder) -> None:
        super().__init__()
        self.decoder = decoder
        self.steps = nn.ModuleList(with_past_attention(block) for block in decoder.blocks())

    def forward(
        self, input_ids: torch.Tensor, image_kv: list[torch.Tensor], past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        d = self.decoder
        T = input_ids.size(1)
        P = past[0].size(2)
        x = d.wte(input_ids)  # (B, T, C)
        if d.config.scale_embeddings:
            x = x * torch.tensor(d.config.n_embd**0.5, dtype=x.dtype)
        positions = torch.arange(T, device=input_ids.device) + P  # (T,)
        if d.wpe is not None:
            x = x + d.wpe(positions)  # (B, T, C)
        rope = None if d.rope is None else (d.rope.cos[positions], d.rope.sin[positions])  # (T, hs) each
        keys = torch.arange(P + T, device=input_ids.device)  # (P + T,)
        mask = keys[None, :] <= positions[:, None]  # (T, P + T): query t sees keys [0, P + t]
        cross = iter(zip(image_kv[0::2], image_kv[1::2], strict=True))
        present: list[torch.Tensor] = []
        for i, step in enumerate(self.steps):
            attn = step.attn
            assert isinstance(attn, PastSelfAttention)
            attn.past, attn.mask = (past[2 * i], past[2 * i + 1]), mask
            layer_kv = next(cross) if step.cross is not None else None
            x = step(x, layer_kv, None, rope if i in d.rope_index else None)
            assert attn.present is not None
            present.extend(attn.present)
            attn.past = attn.mask = attn.present = None
        return (d.logits(d.ln_f(x)), *present)
