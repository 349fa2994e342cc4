"""The text decoder: one block class described by the config (litgpt style), cross-attention to the image in the
blocks `cross_attention_every` names. Names follow nanoGPT (wte, wpe, h, ln_f, lm_head): a block is ln_1 + attn
(+ post_attention_norm), [ln_2 + cross (+ cross_gate), [ln_cross_mlp + cross_mlp (+ cross_mlp_gate)]], ln_3 + mlp
(+ post_mlp_norm)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from captioner.attention import CrossAttention, KVCache, SelfAttention
from captioner.config import CaptionerConfig
from captioner.mlp import make_mlp
from captioner.norms import make_norm
from captioner.rope import Rope, RotaryEmbedding

# per cross-attention layer, in block order: image keys, values, each (B, ng, N, hs)
ImageKV = list[tuple[torch.Tensor, torch.Tensor]]

# what the image adds to a language model's block: cross-attention, its norm and gate, the cross MLP
INSERTED = ("ln_2", "cross", "cross_gate", "ln_cross_mlp", "cross_mlp", "cross_mlp_gate")


def is_inserted(name: str) -> bool:
    """Whether parameter `name` (of the decoder, or `decoder.`-prefixed of the model) belongs to the layers that
    join the image to the language model rather than to the language model itself."""
    parts = name.split(".")
    return any(p == "h" and i + 2 < len(parts) and parts[i + 2] in INSERTED for i, p in enumerate(parts))


def gated(y: torch.Tensor, gate: nn.Parameter | None) -> torch.Tensor:
    """tanh(gate) * y (Flamingo): a gate at 0 leaves the residual stream as it was."""
    return y if gate is None else torch.tanh(gate) * y


def post(y: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
    """A sub-layer's output normed before the residual add (Gemma 2's post norms), or as it is."""
    return y if norm is None else norm(y)


class Block(nn.Module):
    """Pre-norm block: causal self-attention, then (in a cross-attention block) cross-attention to the image and an
    optional cross MLP, each behind its tanh gate when `cross_gate`, then the MLP; with `post_attention_norm` and
    `post_mlp_norm` the self-attention's and the MLP's outputs are normed too (Gemma 2)."""

    def __init__(self, config: CaptionerConfig, cross: bool = True) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = SelfAttention(config)
        self.post_attention_norm: nn.Module | None = make_norm(config) if config.post_attention_norm else None
        self.post_mlp_norm: nn.Module | None = make_norm(config) if config.post_mlp_norm else None
        self.ln_2: nn.Module | None = make_norm(config) if cross else None
        self.cross: CrossAttention | None = CrossAttention(config) if cross else None
        self.ln_3 = make_norm(config)
        self.mlp = make_mlp(config)
        # tanh(0) = 0: a gated block starts as the language model's block (its output is unchanged)
        self.cross_gate = nn.Parameter(torch.zeros(1)) if cross and config.cross_gate else None
        with_mlp = cross and config.cross_mlp
        self.ln_cross_mlp: nn.Module | None = make_norm(config) if with_mlp else None
        self.cross_mlp: nn.Module | None = make_mlp(config) if with_mlp else None
        self.cross_mlp_gate = nn.Parameter(torch.zeros(1)) if with_mlp and config.cross_gate else None

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None,
        start: int | torch.Tensor | None = None,
        rope: Rope | None = None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). `kv`: this block's image keys/values (None in a block without cross-attention);
        `attention`, when given, receives its cross-attention weights (B, nh, T, N)."""
        x = x + post(self.attn(self.ln_1(x), start, rope), self.post_attention_norm)
        if self.cross is not None and self.ln_2 is not None and kv is not None:
            h = self.ln_2(x)
            if attention is not None:
                attention.append(self.cross.attention_weights(h, kv))
            x = x + gated(self.cross(h, kv), self.cross_gate)
            if self.cross_mlp is not None and self.ln_cross_mlp is not None:
                x = x + gated(self.cross_mlp(self.ln_cross_mlp(x)), self.cross_mlp_gate)
        return x + post(self.mlp(self.ln_3(x)), self.post_mlp_norm)


class TextDecoder(nn.Module):
    """Token embeddings (+ learned positions, or RoPE in the self-attention), `n_layer` blocks, final norm, LM head
    (tied to `wte` unless `tie_word_embeddings` is off)."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        config.check_decoder()
        self.config = config
        self.cross_index = config.cross_layers()  # blocks with cross-attention, in order
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.positions == "learned" else None
        self.rope = RotaryEmbedding(config) if config.positions == "rope" else None
        self.drop = nn.Dropout(config.dropout)
        cross = set(self.cross_index)
        self.h = nn.ModuleList(Block(config, i in cross) for i in range(config.n_layer))
        # the blocks whose self-attention rotates its queries and keys
        self.rope_index = set(range(config.n_layer) if config.rope_layers is None else config.rope_layers)
        self.ln_f = make_norm(config)
        # recompute each block's activations in the backward pass (set by training's `Speed.activation_checkpointing`)
        self.activation_checkpointing = False
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight  # weight tying (GPT-2)
        self.apply(self._init_weights)
        # scaled init of the residual projections (GPT-2 paper): one per residual branch of the stream
        branches = 2 * config.n_layer + len(cross) * (1 + config.cross_mlp)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(branches))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def blocks(self) -> list[Block]:
        return [cast(Block, block) for block in self.h]

    def image_kv(self, memory: torch.Tensor) -> ImageKV:
        """Keys/values of every cross-attention layer (in block order) for image memory (B, N, C)."""
        return [block.cross.image_kv(memory) for block in self.blocks() if block.cross is not None]

    def hidden(
        self,
        input_ids: torch.Tensor,
        kv: ImageKV,
        start: int | torch.Tensor | None = None,
        attention: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C) final hidden states (after ln_f).

        Args:
            kv: the image keys/values of each cross-attention layer (B_img, ng, N, hs); B may be B_img * G (G
                beams/samples per image).
            start: with a KV cache set, `input_ids` are positions [start, start + T) and earlier ones come
                from the cache; None runs the whole sequence without the cache (training). A 0-dim long tensor
                (the static decode step, `captioner.static_step`) is never read on the host: its caller keeps
                start + T within the cache and the block size.
            attention: when given, receives each cross-attention layer's weights (B, nh, T, N), in block order.
        """
        B, T = input_ids.shape
        offset = 0 if start is None else start
        if isinstance(offset, int) and offset + T > self.config.block_size:
            raise ValueError(f"sequence of {offset + T} tokens is longer than block_size={self.config.block_size}")
        if len(kv) != len(self.cross_index):
            raise ValueError(f"{len(kv)} image key/value pairs for {len(self.cross_index)} cross-attention layers")
        x = self.wte(input_ids)  # (B, T, C)
        if self.config.scale_embeddings:
            x = x * torch.tensor(self.config.n_embd**0.5, dtype=x.dtype)  # in the embedding's dtype, as Gemma
        if self.wpe is not None:
            x = x + self.wpe(offset + torch.arange(T, device=input_ids.device))  # (B, T, C)
        rope = None if self.rope is None else self.rope(offset, T)  # (T, hs) each
        x = self.drop(x)
        layer_kv = iter(kv)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.h):
            layer_rope = rope if i in self.rope_index else None
            args = (x, next(layer_kv) if block.cross is not None else None, start, layer_rope, attention)
            x = checkpoint(block, *args, use_reentrant=False) if recompute else block(*args)
        return self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) hidden states -> (..., V) logits: the LM head, then the final soft-capping if the config has it."""
        logits = self.lm_head(hidden)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def forward(self, input_ids: torch.Tensor, kv: ImageKV) -> torch.Tensor:
        """(B, T) token ids -> (B, T, V) logits."""
        return self.logits(self.hidden(input_ids, kv))

    # ---- KV cache for generation -------------------------------------------------------------------------------
    def set_kv_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Preallocate self-attention key/value buffers (of the n_query_groups key/value heads) for `batch_size`
        sequences of up to `max_len` tokens."""
        max_len = self.config.block_size if max_len is None else max_len
        ref = self.wte.weight
        _, groups, head_size = self.config.heads()
        for block in self.blocks():
            block.attn.kv_cache = KVCache(
                batch_size, groups, max_len, head_size, device or ref.device, dtype or ref.dtype
            )

    def clear_kv_cache(self) -> None:
        for block in self.blocks():
            block.attn.kv_cache = None

    def reorder_kv_cache(self, index: torch.Tensor) -> None:
        for block in self.blocks():
            assert block.attn.kv_cache is not None, "call set_kv_cache() before reordering it"
            block.attn.kv_cache.reorder(index)
