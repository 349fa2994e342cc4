"""Gemma and Gemma 2: Llama's weight names and grouped-query attention (`captioner.lm.llama`), with an RMSNorm
scaling by 1 + w (`norm_add_unit_offset`), a GeGLU MLP (`GemmaMLP`, GELU with the tanh approximation of
`gelu_pytorch_tanh`), token embeddings times sqrt(hidden_size) in the embedding's dtype (`scale_embeddings`), a
tied head and a head size set apart from the width (`head_dim`, 256 in the released models). Gemma 2 adds:

- norms after the self-attention and the MLP as well as before (`post_attention_norm`, `post_mlp_norm`): its
  `post_attention_layernorm` is the norm after the attention, `pre_feedforward_layernorm` the one before the MLP;
- the self-attention's scores scaled by `query_pre_attn_scalar` ** -0.5 (`attention_scores_scalar`) and
  soft-capped (`attention_logit_softcapping`), and the final logits soft-capped (`final_logit_softcapping`);
- sliding-window layers alternating with global ones: a window longer than `block_size` changes nothing in a
  caption, so the window caps `block_size` (as Mistral's) and every layer attends to the whole caption.

Gemma 3 (`gemma3_text`) is refused: its local and global layers rotate with two RoPE bases, which no field
describes yet.
"""

from __future__ import annotations

from typing import Any

from captioner.config import CaptionerConfig
from captioner.lm.convert import Family, State
from captioner.lm.gpt2 import GELU
from captioner.lm.llama import LAYER, llama_fields, llama_weights

# Gemma 2's norms around its sub-layers: the Llama name post_attention_layernorm is the norm after the attention
GEMMA2_LAYER = {
    **{k: v for k, v in LAYER.items() if not k.startswith("post_attention_layernorm")},
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ln_3.weight",
    "post_feedforward_layernorm.weight": "post_mlp_norm.weight",
}


def gemma_config(hf: Any) -> dict[str, Any]:
    # what transformers runs: Gemma's MLP reads hidden_act (a legacy "gelu" is its tanh GELU, as transformers 5
    # converts it), Gemma 2's hidden_activation
    gemma2 = hf.model_type == "gemma2"
    act = hf.hidden_activation if gemma2 else hf.hidden_act
    act = "gelu_pytorch_tanh" if act == "gelu" and not gemma2 else act
    if act not in GELU:
        raise ValueError(f"hidden_act={act!r}: a Gemma with GELU ({', '.join(GELU)}) is needed")
    if getattr(hf, "use_bidirectional_attention", None):
        raise ValueError("use_bidirectional_attention is set: a causal Gemma is needed")
    return {
        **llama_fields(hf),
        "mlp_class_name": "GemmaMLP",
        "gelu_approximate": GELU[act],
        "norm_add_unit_offset": True,
        "scale_embeddings": True,
    }


def gemma2_config(hf: Any) -> dict[str, Any]:
    return {
        **gemma_config(hf),
        "attention_scores_scalar": hf.query_pre_attn_scalar,
        "attention_logit_softcapping": hf.attn_logit_softcapping,
        "final_logit_softcapping": hf.final_logit_softcapping,
        "post_attention_norm": True,
        "post_mlp_norm": True,
    }


def gemma2_weights(hf: State, config: CaptionerConfig) -> State:
    return llama_weights(hf, config, GEMMA2_LAYER)


GEMMA = Family("Gemma", gemma_config, llama_weights)
GEMMA2 = Family("Gemma 2", gemma2_config, gemma2_weights)
