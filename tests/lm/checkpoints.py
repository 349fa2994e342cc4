"""Tiny random transformers causal LMs saved with `save_pretrained`, as a Hub checkpoint would hold them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}  # fmt: skip


def llama_kwargs(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """Grouped-query attention (4 heads, 2 key/value heads), an untied head, rope theta and RMSNorm eps off their
    defaults, an MLP width that is not 4x."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "rope_theta": 5000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        **overrides,
    }


# what each family's tiny checkpoint sets beyond `llama_kwargs`, as its released models do
FAMILY_KWARGS: dict[str, dict[str, Any]] = {
    "smollm3": {"no_rope_layers": [1, 1, 1, 0]},  # the fourth layer without RoPE
    "qwen2": {"tie_word_embeddings": True},  # q/k/v biases are Qwen2's own
    "qwen3": {"head_dim": 32},  # q/k norm; a head size apart from hidden_size / heads (16)
    "gemma": {"head_dim": 32, "tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh"},
}


def save_lm(path: Path, model_type: str, vocab_size: int, seed: int = 0, **overrides: Any) -> Path:
    """A random `model_type` LM (llama, mistral, smollm3, qwen2, qwen3, gemma) of `llama_kwargs` sizes, saved to
    `path`; every norm weight and bias drawn away from its initial 1 or 0."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = llama_kwargs(vocab_size, **{**FAMILY_KWARGS.get(model_type, {}), **overrides})
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # norms away from 1 and biases from 0, so that a tensor mapped to the wrong place shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.uniform_(-0.5, 0.5)
    model.save_pretrained(path)
    return path
