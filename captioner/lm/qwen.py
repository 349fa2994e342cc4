"""Qwen2 and Qwen3 (Qwen2.5 is a Qwen2): Llama's weight names and blocks (`captioner.lm.llama`), with

- Qwen2: biases on the q/k/v projections only (`attn_bias`; its o_proj and MLP have none), the head usually tied;
- Qwen3: no q/k/v bias, a per-head RMSNorm of the queries and keys before RoPE (`norm_qk`: q_norm, k_norm) and a
  head size set apart from the width (`head_dim`).

A sliding window (`use_sliding_window`) is read as Llama's: it caps `block_size`, beyond any caption.
"""

from __future__ import annotations

from typing import Any

from captioner.lm.convert import Family
from captioner.lm.llama import llama_config, llama_weights


def qwen2_config(hf: Any) -> dict[str, Any]:
    return {**llama_config(hf), "attn_bias": True}


def qwen3_config(hf: Any) -> dict[str, Any]:
    return {**llama_config(hf), "norm_qk": True}


QWEN2 = Family("Qwen2", qwen2_config, llama_weights)
QWEN3 = Family("Qwen3", qwen3_config, llama_weights)
