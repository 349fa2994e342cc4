"""Llama and the families that share its weight names: Mistral, SmolLM2 (a Llama), SmolLM3 (a Llama whose every
fourth layer has no RoPE). RMSNorm, RoPE (with Llama 3's scaling), SwiGLU, grouped-query attention. The fields and
the renaming here are also the base of the Qwen and Gemma families (`captioner.lm.qwen`, `captioner.lm.gemma`),
which keep Llama's weight names."""

from __future__ import annotations

from typing import Any

from captioner.config import CaptionerConfig
from captioner.lm.convert import Family, State, rename, without_prefix

LAYER = {
    "input_layernorm.weight": "ln_1.weight",
    "post_attention_layernorm.weight": "ln_3.weight",
    "self_attn.o_proj.weight": "attn.c_proj.weight",
    "self_attn.o_proj.bias": "attn.c_proj.bias",
    "mlp.down_proj.weight": "mlp.c_proj.weight",
    "mlp.down_proj.bias": "mlp.c_proj.bias",
    "self_attn.q_norm.weight": "attn.norm_q.weight",  # Qwen3's per-head q/k RMSNorm
    "self_attn.k_norm.weight": "attn.norm_k.weight",
}
FUSED = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.c_fc": ("mlp.gate_proj", "mlp.up_proj"),
}
IGNORED = ("rotary_emb.inv_freq",)  # computed, saved by old checkpoints


def rope_fields(hf: Any) -> dict[str, Any]:
    """RoPE theta and scaling: transformers 5's `rope_parameters`, or 4's `rope_theta` and `rope_scaling`."""
    params = dict(getattr(hf, "rope_parameters", None) or {})
    if not params:
        params = {**(getattr(hf, "rope_scaling", None) or {}), "rope_theta": getattr(hf, "rope_theta", 10000.0)}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        adjustments = None
    elif kind == "llama3":
        keys = ("factor", "low_freq_factor", "high_freq_factor")
        adjustments = {k: float(params[k]) for k in keys}
        adjustments["original_max_seq_len"] = float(params["original_max_position_embeddings"])
    elif kind == "linear":
        adjustments = {"factor": float(params["factor"])}
    else:
        raise ValueError(f"its rope scaling {kind!r} is not supported; supported: default, llama3, linear")
    return {"rope_base": float(params["rope_theta"]), "rope_adjustments": adjustments}


def llama_fields(hf: Any) -> dict[str, Any]:
    """The decoder fields of a Llama-style config, whatever its MLP's activation (which the family checks)."""
    attention_bias, mlp_bias = getattr(hf, "attention_bias", False), getattr(hf, "mlp_bias", False)
    if attention_bias != mlp_bias:
        raise ValueError(f"attention_bias={attention_bias} and mlp_bias={mlp_bias}: the same setting on both is needed")
    window = getattr(hf, "sliding_window", None) if getattr(hf, "use_sliding_window", True) else None
    fields = {
        "vocab_size": hf.vocab_size,
        "n_layer": hf.num_hidden_layers,
        "n_head": hf.num_attention_heads,
        "n_embd": hf.hidden_size,
        "n_query_groups": hf.num_key_value_heads,
        "head_size": getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
        "intermediate_size": hf.intermediate_size,
        "bias": bool(mlp_bias),
        "norm_class_name": "RMSNorm",
        "norm_eps": hf.rms_norm_eps,
        "positions": "rope",
        **rope_fields(hf),
        "mlp_class_name": "LLaMAMLP",
        "tie_word_embeddings": hf.tie_word_embeddings,
        # a sliding window longer than the captions changes nothing; a shorter one caps them
        "block_size": min(hf.max_position_embeddings, window or hf.max_position_embeddings),
    }
    flags = getattr(hf, "no_rope_layers", None)  # SmolLM3: 1 = the layer uses RoPE
    if flags is not None and not all(flags):
        fields["rope_layers"] = [i for i, uses in enumerate(flags[: hf.num_hidden_layers]) if uses]
    return fields


def llama_config(hf: Any) -> dict[str, Any]:
    if hf.hidden_act != "silu":
        raise ValueError(f"hidden_act={hf.hidden_act!r}: a Llama with SiLU (SwiGLU) is needed")
    return llama_fields(hf)


def llama_weights(hf: State, config: CaptionerConfig, layer: dict[str, str] = LAYER) -> State:
    top = {"wte.weight": "embed_tokens.weight", "ln_f.weight": "norm.weight"}
    hf = without_prefix(hf, "model.")
    if config.tie_word_embeddings:
        hf.pop("lm_head.weight", None)  # saved by some tied checkpoints: the same tensor as embed_tokens
    else:
        top["lm_head.weight"] = "lm_head.weight"
    return rename(hf, config.n_layer, top, layer, FUSED, ignore=IGNORED)


LLAMA = Family("Llama", llama_config, llama_weights)
