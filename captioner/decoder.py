"""GPT-style text decoder with cross-attention blocks; names follow nanoGPT (wte, wpe, h, ln_f, lm_head)."""

from __future__ import annotations

import math

import torch
from torch import nn

from captioner.attention import CrossAttention, KVCache, SelfAttention
from captioner.config import CaptionerConfig

ImageKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (B, nh, N, hs)


class MLP(nn.Module):
    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu_approximate)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN block: causal self-attention, then cross-attention to the image, then MLP."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.cross = CrossAttention(config)
        self.ln_3 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        # tanh(0) = 0: a gated block starts as a plain GPT block (the pretrained LM's output is unchanged)
        self.cross_gate = nn.Parameter(torch.zeros(1)) if config.cross_gate else None

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        start: int | None = None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`attention`, when given, receives this block's cross-attention weights (B, nh, T, N)."""
        x = x + self.attn(self.ln_1(x), start)
        h = self.ln_2(x)
        if attention is not None:
            attention.append(self.cross.attention_weights(h, kv))
        cross = self.cross(h, kv)
        x = x + (cross if self.cross_gate is None else torch.tanh(self.cross_gate) * cross)
        return x + self.mlp(self.ln_3(x))


class TextDecoder(nn.Module):
    """Token + position embeddings, `n_layer` blocks, final LayerNorm, LM head tied to `wte`."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (GPT-2)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2 paper)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(3 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def image_kv(self, memory: torch.Tensor) -> ImageKV:
        """Keys/values of every cross-attention layer for image memory (B, N, C)."""
        return [block.cross.image_kv(memory) for block in self.h]

    def hidden(
        self,
        input_ids: torch.Tensor,
        kv: ImageKV,
        start: int | None = None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) final hidden states (after ln_f).

        Args:
            kv: per-layer image keys/values (B_img, nh, N, hs); B may be B_img * G (G beams/samples per image).
            start: with a KV cache set, `input_ids` are positions [start, start + T) and earlier ones come
                from the cache; None runs the whole sequence without the cache (training).
            attention: when given, receives each layer's cross-attention weights (B, nh, T, N).
        """
        B, T = input_ids.shape
        offset = 0 if start is None else start
        if offset + T > self.config.block_size:
            raise ValueError(f"sequence of {offset + T} tokens is longer than block_size={self.config.block_size}")
        pos = torch.arange(offset, offset + T, device=input_ids.device)  # (T,)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))  # (B, T, C)
        for block, layer_kv in zip(self.h, kv, strict=True):
            x = block(x, layer_kv, start, attention)
        return self.ln_f(x)

    def forward(self, input_ids: torch.Tensor, kv: ImageKV) -> torch.Tensor:
        """(B, T) token ids -> (B, T, V) logits."""
        return self.lm_head(self.hidden(input_ids, kv))

    # ---- KV cache for generation -------------------------------------------------------------------------------
    def set_kv_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> None:
        """Preallocate self-attention key/value buffers for `batch_size` sequences of up to `max_len` tokens."""
        max_len = self.config.block_size if max_len is None else max_len
        ref = self.wte.weight
        hs = self.config.n_embd // self.config.n_head
        for block in self.h:
            block.attn.kv_cache = KVCache(
                batch_size, self.config.n_head, max_len, hs, device or ref.device, dtype or ref.dtype
            )

    def clear_kv_cache(self) -> None:
        for block in self.h:
            block.attn.kv_cache = None

    def reorder_kv_cache(self, index: torch.Tensor) -> None:
        for block in self.h:
            block.attn.kv_cache.reorder(index)
