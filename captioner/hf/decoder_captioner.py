"""The decoder of a captioner model exported for transformers: its blocks as the package's config describes them,
as captioner builds them (same parameter names): LayerNorm or RMSNorm, learned positions or RoPE, a GELU or gated
MLP, grouped key/value heads, q/k norm, cross-attention in the blocks `cross_attention_layers` names behind tanh
gates when gated. Self-contained: written by `captioner export-hf` beside modeling_captioner.py, it imports torch
and transformers only (no dropout: this is for inference)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_captioner import CaptionerConfig


class RMSNorm(nn.Module):
    """x / rms(x) * w in float32 (Llama); with `add_unit_offset` the scale is 1 + w (Gemma)."""

    def __init__(self, size: int, eps: float, add_unit_offset: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size) if add_unit_offset else torch.ones(size))
        self.eps, self.add_unit_offset = eps, add_unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, x = x.dtype, x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * ((1 + self.weight.float()) if self.add_unit_offset else self.weight.float())).to(dtype)


def make_norm(config: CaptionerConfig, size: int | None = None) -> nn.Module:
    size = config.n_embd if size is None else size
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(size, config.norm_eps, config.norm_add_unit_offset)
    return nn.LayerNorm(size, eps=config.norm_eps, bias=config.bias)


def heads(config: CaptionerConfig) -> tuple[int, int, int]:
    """Query heads, key/value heads, head size."""
    hs = config.head_size or config.n_embd // config.n_head
    return config.n_head, config.n_query_groups or config.n_head, hs


def inverse_frequencies(config: CaptionerConfig) -> torch.Tensor:
    """(hs // 2,) RoPE frequencies with the LM's rope scaling (`rope_adjustments`: Llama 3's, or linear)."""
    hs = heads(config)[2]
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, hs, 2, dtype=torch.int64).float() / hs))
    adj = config.rope_adjustments
    if adj is None:
        return inv_freq
    if "original_max_seq_len" not in adj:
        return inv_freq / adj["factor"]
    old, low, high, factor = adj["original_max_seq_len"], adj["low_freq_factor"], adj["high_freq_factor"], adj["factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    return torch.where((wavelen >= old / high) & (wavelen <= old / low), smoothed, scaled)


def rope_angles(config: CaptionerConfig, start: int, length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """cos, sin (T, hs) of positions [start, start + T), computed at each call (no buffer to initialise)."""
    inv_freq = inverse_frequencies(config).to(device)
    freqs = torch.arange(start, start + length, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(B, nh, T, hs) rotated in the "rotate half" layout."""
    cos, sin = (t.to(x.dtype) for t in rope)
    half = x.size(-1) // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """(B, nh, T, hs) queries over (B, ng, S, hs) keys/values, each key/value head serving nh // ng query heads;
    `scale` the scores' factor (None: hs ** -0.5); `softcap`: scores = c tanh(scores / c) before the mask and the
    softmax (Gemma 2; no SDPA kernel has it)."""
    rep = q.size(1) // k.size(1)
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scores = (q @ k.transpose(-2, -1)) * (q.size(-1) ** -0.5 if scale is None else scale)  # (B, nh, T, S)
    scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


class SelfAttention(nn.Module):
    """Causal self-attention: fused [q; k; v] (grouped key/value heads), optional q/k norm, RoPE, a KV cache."""

    def __init__(self, config: CaptionerConfig, layer: int) -> None:
        super().__init__()
        self.n_head, self.n_groups, self.hs = heads(config)
        self.layer, self.sizes = layer, (self.n_head * self.hs, self.n_groups * self.hs, self.n_groups * self.hs)
        self.c_attn = nn.Linear(config.n_embd, sum(self.sizes), bias=config.bias or config.attn_bias)
        self.c_proj = nn.Linear(self.sizes[0], config.n_embd, bias=config.bias)
        self.norm_q = make_norm(config, self.hs) if config.norm_qk else None
        self.norm_k = make_norm(config, self.hs) if config.norm_qk else None
        scalar = config.attention_scores_scalar
        self.scale, self.softcap = (None if scalar is None else scalar**-0.5), config.attention_logit_softcapping

    def forward(self, x: torch.Tensor, cache, rope) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).split(self.sizes, dim=2)
        q = q.view(B, T, self.n_head, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k, v = (t.view(B, T, self.n_groups, self.hs).transpose(1, 2) for t in (k, v))  # (B, ng, T, hs)
        if self.norm_q is not None and self.norm_k is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        past = 0
        if cache is not None:
            past = cache.get_seq_length(self.layer)
            k, v = cache.update(k, v, self.layer)  # (B, ng, past + T, hs)
        mask = None
        if T > 1:  # query t sees keys [0, past + t]
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = attend(q, k, v, mask, self.scale, self.softcap)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, self.sizes[0]))


class CrossAttention(nn.Module):
    """Text queries over the image tokens: no mask, no position on the image keys."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.n_head, self.n_groups, self.hs = heads(config)
        q_size, kv_size = self.n_head * self.hs, self.n_groups * self.hs
        self.q_proj = nn.Linear(config.n_embd, q_size, bias=config.bias or config.attn_bias)
        self.kv_proj = nn.Linear(config.n_embd, 2 * kv_size, bias=config.bias or config.attn_bias)
        self.c_proj = nn.Linear(q_size, config.n_embd, bias=config.bias)
        self.norm_q = make_norm(config, self.hs) if config.norm_qk else None
        self.norm_k = make_norm(config, self.hs) if config.norm_qk else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k, v = (t.view(B, -1, self.n_groups, self.hs).transpose(1, 2) for t in self.kv_proj(memory).chunk(2, 2))
        if self.norm_q is not None and self.norm_k is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        y = attend(q, k, v)  # (B, nh, T, hs): every patch
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.hs))


class MLP(nn.Module):
    """GptNeoxMLP: c_proj(gelu(c_fc(x))); LLaMAMLP / GemmaMLP: c_proj(act(gate) * up), [gate; up] = c_fc(x)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        hidden = config.intermediate_size or 4 * config.n_embd
        self.gated, self.kind = config.mlp_class_name != "GptNeoxMLP", config.mlp_class_name
        self.approximate = config.gelu_approximate
        self.c_fc = nn.Linear(config.n_embd, (2 if self.gated else 1) * hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        act = F.gelu(gate, approximate=self.approximate) if self.kind == "GemmaMLP" else F.silu(gate)
        return self.c_proj(act * up)


def gated(y: torch.Tensor, gate: nn.Parameter | None) -> torch.Tensor:
    return y if gate is None else torch.tanh(gate) * y


def post(y: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
    return y if norm is None else norm(y)


class Block(nn.Module):
    """Pre-norm: causal self-attention; in a cross-attention block, cross-attention to the image and an optional
    cross MLP, each behind tanh(gate) when gated; then the MLP."""

    def __init__(self, config: CaptionerConfig, layer: int) -> None:
        super().__init__()
        cross = layer in config.cross_attention_layers
        self.ln_1 = make_norm(config)
        self.attn = SelfAttention(config, layer)
        self.post_attention_norm = make_norm(config) if config.post_attention_norm else None  # Gemma 2
        self.post_mlp_norm = make_norm(config) if config.post_mlp_norm else None
        self.ln_2 = make_norm(config) if cross else None
        self.cross = CrossAttention(config) if cross else None
        self.ln_3 = make_norm(config)
        self.mlp = MLP(config)
        self.cross_gate = nn.Parameter(torch.zeros(1)) if cross and config.cross_gate else None
        with_mlp = cross and config.cross_mlp
        self.ln_cross_mlp = make_norm(config) if with_mlp else None
        self.cross_mlp = MLP(config) if with_mlp else None
        self.cross_mlp_gate = nn.Parameter(torch.zeros(1)) if with_mlp and config.cross_gate else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor, cache, rope) -> torch.Tensor:
        x = x + post(self.attn(self.ln_1(x), cache, rope), self.post_attention_norm)
        if self.cross is not None and self.ln_2 is not None:
            x = x + gated(self.cross(self.ln_2(x), memory), self.cross_gate)
            if self.cross_mlp is not None and self.ln_cross_mlp is not None:
                x = x + gated(self.cross_mlp(self.ln_cross_mlp(x)), self.cross_mlp_gate)
        return x + post(self.mlp(self.ln_3(x)), self.post_mlp_norm)


class TextDecoder(nn.Module):
    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.positions == "learned" else None
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # its own tensor, tied or not

    def forward(self, input_ids: torch.Tensor, memory: torch.Tensor, cache) -> torch.Tensor:
        """(B, T) new token ids, (B, N, D) image memory -> (B, T, V) logits."""
        c = self.config
        past = cache.get_seq_length(0) if cache is not None else 0
        T = input_ids.size(1)
        if past + T > c.block_size:
            raise ValueError(f"{past + T} tokens is longer than the model's block_size={c.block_size}")
        x = self.wte(input_ids)  # (B, T, D)
        if c.scale_embeddings:
            x = x * torch.tensor(c.n_embd**0.5, dtype=x.dtype)  # in the embedding's dtype, as Gemma
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + T, device=input_ids.device))
        rope = rope_angles(c, past, T, input_ids.device) if c.positions == "rope" else None
        with_rope = set(range(c.n_layer) if c.rope_layers is None else c.rope_layers)
        for i, block in enumerate(self.h):
            x = block(x, memory, cache, rope if i in with_rope else None)
        logits = self.lm_head(self.ln_f(x))
        cap = c.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap
