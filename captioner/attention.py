"""Causal self-attention with a preallocated KV cache, and cross-attention (text queries, image keys/values)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.config import CaptionerConfig


class KVCache(nn.Module):
    """Preallocated key/value buffers (B, nh, max_len, hs) for one self-attention layer (litgpt style), and a spare
    pair, made at the first reorder, that beam search reorders into (only the positions written so far are copied,
    then the pairs swap)."""

    def __init__(self, batch_size: int, n_head: int, max_len: int, head_size: int, device, dtype) -> None:
        super().__init__()
        shape = (batch_size, n_head, max_len, head_size)
        for name in ("k", "v"):
            self.register_buffer(name, torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.k_spare: torch.Tensor | None = None
        self.v_spare: torch.Tensor | None = None
        self.length = 0  # positions written so far

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, nh, T, hs) at positions [start, start + T); return keys/values of [0, start + T)."""
        end = start + k.size(2)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search): row i becomes old row index[i], for the positions written so far."""
        n = self.length
        if self.k_spare is None:  # greedy and sampling never reorder: only beam search pays for the spare pair
            self.k_spare, self.v_spare = torch.empty_like(self.k), torch.empty_like(self.v)
        torch.index_select(self.k[:, :, :n], 0, index, out=self.k_spare[:, :, :n])
        torch.index_select(self.v[:, :, :n], 0, index, out=self.v_spare[:, :, :n])
        self.k, self.k_spare = self.k_spare, self.k
        self.v, self.v_spare = self.v_spare, self.v


class SelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection (nanoGPT) and an optional KV cache."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, start: int | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). With `start`, x holds positions [start, start + T) and the cache is used."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        drop = self.dropout if self.training else 0.0
        if start is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)  # (B, nh, T, hs)
        else:
            assert self.kv_cache is not None, "call set_kv_cache() before decoding with positions"
            k, v = self.kv_cache.update(start, k, v)  # (B, nh, start + T, hs)
            mask = None
            if T > 1:  # prefill: query t sees keys [0, start + t]
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class CrossAttention(nn.Module):
    """Multi-head attention from text queries to image keys/values.

    `image_kv(memory)` is split out so that generation computes the image keys/values once per image. The
    queries may hold G sequences per image (beams or samples, grouped image by image): they are folded into
    the query length, so all G share one copy of the image keys/values by broadcasting, never by copying.
    """

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.kv_proj = nn.Linear(config.n_embd, 2 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def image_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) image tokens -> keys and values, each (B, nh, N, hs)."""
        B, N, C = memory.shape
        k, v = self.kv_proj(memory).split(C, dim=2)
        return tuple(t.view(B, N, self.n_head, C // self.n_head).transpose(1, 2) for t in (k, v))  # type: ignore[return-value]

    def _queries(self, x: torch.Tensor, n_images: int) -> torch.Tensor:
        """(B*G, T, C) -> (B, nh, G*T, hs): G sequences per image folded into the query length."""
        BG, T, C = x.shape
        G = BG // n_images
        q = self.q_proj(x).view(n_images, G, T, self.n_head, C // self.n_head)  # (B, G, T, nh, hs)
        return q.permute(0, 3, 1, 2, 4).reshape(n_images, self.n_head, G * T, C // self.n_head)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        BG, T, C = x.shape
        k, v = kv  # (B, nh, N, hs)
        B = k.size(0)
        q = self._queries(x, B)  # (B, nh, G*T, hs)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, nh, G*T, hs): no mask, all patches
        y = y.view(B, self.n_head, BG // B, T, C // self.n_head).permute(0, 2, 3, 1, 4).reshape(BG, T, C)
        return self.resid_dropout(self.c_proj(y))

    def attention_weights(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Softmax weights (B*G, nh, T, N) of the text positions over the image tokens, for inspection."""
        BG, T, _ = x.shape
        k = kv[0]  # (B, nh, N, hs)
        q = self._queries(x, k.size(0))  # (B, nh, G*T, hs)
        w = torch.softmax(q @ k.transpose(-2, -1) / (k.size(-1) ** 0.5), dim=-1)  # (B, nh, G*T, N)
        B, nh, _, N = w.shape
        return w.view(B, nh, BG // B, T, N).transpose(1, 2).reshape(BG, nh, T, N)
