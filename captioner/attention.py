"""Causal self-attention with a preallocated KV cache, and cross-attention (text queries, image keys/values); both
with grouped-query attention (`n_query_groups` key/value heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.config import CaptionerConfig
from captioner.norms import make_norm
from captioner.rope import Rope, apply_rope


class KVCache(nn.Module):
    """Preallocated key/value buffers (B, ng, max_len, hs) of the ng key/value heads of one self-attention layer
    (litgpt style), and a spare pair, made at the first reorder, that beam search reorders into (only the positions
    written so far are copied, then the pairs swap)."""

    k: torch.Tensor  # registered buffers
    v: torch.Tensor

    def __init__(
        self, batch_size: int, n_groups: int, max_len: int, head_size: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__()
        shape = (batch_size, n_groups, max_len, head_size)
        for name in ("k", "v"):
            self.register_buffer(name, torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.k_spare: torch.Tensor | None = None
        self.v_spare: torch.Tensor | None = None
        self.length = 0  # positions written so far

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, ng, T, hs) at positions [start, start + T); return keys/values of [0, start + T)."""
        end = start + k.size(2)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def write(self, start: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write (B, ng, T, hs) at positions start + [0, T), `start` a 0-dim long tensor (no host read); return the
        whole keys/values (B, ng, max_len, hs) and the mask (T, max_len), True where query t sees a key (<= its
        position: the keys not yet written are masked)."""
        index = start + torch.arange(k.size(2), device=k.device)  # (T,)
        self.k.index_copy_(2, index, k)
        self.v.index_copy_(2, index, v)
        self.length = self.k.size(2)  # a reorder copies every position: which are written is not known here
        mask = torch.arange(self.k.size(2), device=k.device)[None, :] <= index[:, None]  # (T, max_len)
        return self.k, self.v, mask

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search): row i becomes old row index[i], for the positions written so far."""
        n = self.length
        k_spare, v_spare = self.k_spare, self.v_spare
        if k_spare is None or v_spare is None:  # greedy and sampling never reorder: only beam search pays for it
            k_spare, v_spare = torch.empty_like(self.k), torch.empty_like(self.v)
        torch.index_select(self.k[:, :, :n], 0, index, out=k_spare[:, :, :n])
        torch.index_select(self.v[:, :, :n], 0, index, out=v_spare[:, :, :n])
        self.k, self.k_spare = k_spare, self.k
        self.v, self.v_spare = v_spare, self.v


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout: float = 0.0,
    scale: float | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention of queries (B, nh, T, hs) over keys/values (B, ng, S, hs), each key/value head
    serving nh // ng query heads (grouped-query attention); `mask` (T, S) True where a query sees a key; `scale`
    the scores' factor (None: hs ** -0.5). Without a causal mask, the query heads of a group are folded into the
    query length, so the keys/values are never copied. `softcap`: `softcapped` attention."""
    B, nh, T, hs = q.shape
    ng = k.size(1)
    if softcap is not None:
        return softcapped(q, k, v, mask, causal, dropout, scale, softcap)
    if nh == ng and not causal:
        return sdpa(q, k, v, mask, dropout, scale)
    if nh == ng:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale)
    if causal:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale, enable_gqa=True)
    rep = nh // ng
    folded = q.reshape(B, ng, rep * T, hs)  # head g * rep + r, position t -> group g, row r * T + t
    mask = None if mask is None else mask.repeat(rep, 1)  # (rep * T, S)
    y = sdpa(folded, k, v, mask, dropout, scale)
    return y.view(B, nh, T, hs)  # from (B, ng, rep * T, hs)


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention` of queries (B, h, T, hs) over keys/values (B, h, S, hs), `mask` (T, S) True
    where a query sees a key. While `captioner export-onnx` traces it, the scores are computed as (K Q^T)^T: its
    transposes are of the queries and the scores (one row per query: one per head at a decoding step), never of the
    keys. As ONNX Runtime ran the exporter's decomposition of scaled_dot_product_attention, the image keys
    (B * h, N, hs) of every cross-attention layer were transposed into a new tensor at every decoding step, a third
    of the decoder graph's time at batch 16 (docs/BENCHMARKS.md)."""
    if not torch.onnx.is_in_onnx_export():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    q = q * (q.size(-1) ** -0.5 if scale is None else scale)
    scores = (k @ q.transpose(-2, -1)).transpose(-2, -1)  # (B, h, S, T) -> (B, h, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, h, T, hs)


def softcapped(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout: float,
    scale: float | None,
    softcap: float,
) -> torch.Tensor:
    """`attend` with the scores soft-capped, c * tanh(scores / c), before the mask and the softmax (Gemma 2's
    `attn_logit_softcapping`; no SDPA kernel has it, so the scores are made here, the softmax in float32)."""
    B, nh, T, hs = q.shape
    S, rep = k.size(2), nh // k.size(1)
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # (B, nh, S, hs)
    scores = (q @ k.transpose(-2, -1)) * (hs**-0.5 if scale is None else scale)  # (B, nh, T, S)
    scores = torch.tanh(scores / softcap) * softcap
    if causal:  # query t sees keys [0, S - T + t]
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(torch.softmax(scores.float(), dim=-1).to(q.dtype), p=dropout)
    return weights @ v  # (B, nh, T, hs)


class SelfAttention(nn.Module):
    """Causal self-attention with a fused qkv projection (nanoGPT's `c_attn`, [q; k; v] with n_query_groups key/value
    heads), optional q/k norm and RoPE on queries and keys, an optional KV cache of the key/value heads, and the
    config's score scale and soft-capping (Gemma 2)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.n_head, self.n_query_groups, self.head_size = config.heads()
        q_size, kv_size = self.n_head * self.head_size, self.n_query_groups * self.head_size
        self.sizes = (q_size, kv_size, kv_size)
        self.c_attn = nn.Linear(config.n_embd, q_size + 2 * kv_size, bias=config.bias or config.attn_bias)
        self.c_proj = nn.Linear(q_size, config.n_embd, bias=config.bias)
        self.norm_q = make_norm(config, self.head_size) if config.norm_qk else None
        self.norm_k = make_norm(config, self.head_size) if config.norm_qk else None
        scalar = config.attention_scores_scalar
        self.scale, self.softcap = (None if scalar is None else scalar**-0.5), config.attention_logit_softcapping
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.kv_cache: KVCache | None = None

    def qkv(self, x: torch.Tensor, rope: Rope | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) -> queries (B, nh, T, hs), keys and values (B, ng, T, hs): projected, q/k normed, rotated."""
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.sizes, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_query_groups, self.head_size).transpose(1, 2)  # (B, ng, T, hs)
        v = v.view(B, T, self.n_query_groups, self.head_size).transpose(1, 2)  # (B, ng, T, hs)
        if self.norm_q is not None and self.norm_k is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v

    def forward(
        self, x: torch.Tensor, start: int | torch.Tensor | None = None, rope: Rope | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). With `start`, x holds positions [start, start + T) and the cache is used; `rope`
        holds the angles of those positions. A tensor `start` (0-dim, long) attends over the cache's whole length
        with a length mask (`KVCache.write`): the same shapes at every position."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x, rope)
        drop = self.dropout if self.training else 0.0
        if start is None:
            y = attend(q, k, v, causal=True, dropout=drop, scale=self.scale, softcap=self.softcap)  # (B, nh, T, hs)
        else:
            assert self.kv_cache is not None, "call set_kv_cache() before decoding with positions"
            mask: torch.Tensor | None = None
            if isinstance(start, torch.Tensor):
                k, v, mask = self.kv_cache.write(start, k, v)  # (B, ng, max_len, hs) each, mask (T, max_len)
            else:
                k, v = self.kv_cache.update(start, k, v)  # (B, ng, start + T, hs)
                if T > 1:  # prefill: query t sees keys [0, start + t]
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = attend(q, k, v, mask, scale=self.scale, softcap=self.softcap)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, self.sizes[0])
        return self.resid_dropout(self.c_proj(y))


class CrossAttention(nn.Module):
    """Attention from text queries to image keys/values: never causal, no position on the image keys.

    `image_kv(memory)` is split out so that generation computes the image keys/values once per image. The
    queries may hold G sequences per image (beams or samples, grouped image by image): they are folded into
    the query length, as are the query heads sharing a key/value head, so all of them share one copy of the
    image keys/values by broadcasting, never by copying.
    """

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.n_head, self.n_query_groups, self.head_size = config.heads()
        q_size, kv_size = self.n_head * self.head_size, self.n_query_groups * self.head_size
        self.q_proj = nn.Linear(config.n_embd, q_size, bias=config.bias or config.attn_bias)
        self.kv_proj = nn.Linear(config.n_embd, 2 * kv_size, bias=config.bias or config.attn_bias)
        self.c_proj = nn.Linear(q_size, config.n_embd, bias=config.bias)
        self.norm_q = make_norm(config, self.head_size) if config.norm_qk else None
        self.norm_k = make_norm(config, self.head_size) if config.norm_qk else None
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def image_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) image tokens -> keys and values, each (B, ng, N, hs)."""
        B, N, _ = memory.shape
        k, v = (
            t.view(B, N, self.n_query_groups, self.head_size).transpose(1, 2) for t in self.kv_proj(memory).chunk(2, 2)
        )
        return (k if self.norm_k is None else self.norm_k(k)), v

    def _queries(self, x: torch.Tensor, n_images: int) -> torch.Tensor:
        """(B*G, T, C) -> (B, ng, rep*G*T, hs): the G sequences of an image and the rep = nh // ng query heads of a
        key/value head folded into the query length."""
        BG, T, _ = x.shape
        G = BG // n_images
        q = self.q_proj(x).view(n_images, G, T, self.n_head, self.head_size)  # (B, G, T, nh, hs)
        if self.norm_q is not None:
            q = self.norm_q(q)
        rows = (self.n_head // self.n_query_groups) * G * T
        return q.permute(0, 3, 1, 2, 4).reshape(n_images, self.n_query_groups, rows, self.head_size)

    def _unfold(self, y: torch.Tensor, BG: int) -> torch.Tensor:
        """(B, ng, rep*G*T, X) -> (B*G, nh, T, X)."""
        B, X = y.size(0), y.size(-1)
        return y.view(B, self.n_head, BG // B, -1, X).transpose(1, 2).reshape(BG, self.n_head, -1, X)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        BG, T, _ = x.shape
        k, v = kv  # (B, ng, N, hs)
        q = self._queries(x, k.size(0))  # (B, ng, rep*G*T, hs)
        drop = self.dropout if self.training else 0.0
        y = sdpa(q, k, v, dropout=drop)  # (B, ng, rep*G*T, hs): no mask, all patches
        y = y.view(-1, self.n_head, BG // k.size(0), T, self.head_size).permute(0, 2, 3, 1, 4)  # (B, G, T, nh, hs)
        y = y.reshape(BG, T, self.n_head * self.head_size)
        return self.resid_dropout(self.c_proj(y))

    def attention_weights(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Softmax weights (B*G, nh, T, N) of the text positions over the image tokens, for inspection."""
        k = kv[0]  # (B, ng, N, hs)
        q = self._queries(x, k.size(0))  # (B, ng, rep*G*T, hs)
        w = torch.softmax(q @ k.transpose(-2, -1) / (k.size(-1) ** 0.5), dim=-1)  # (B, ng, rep*G*T, N)
        return self._unfold(w, x.size(0))
