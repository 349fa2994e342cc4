"""Gemma (the first version): Llama's weight names and grouped-query attention (`captioner.lm.llama`), with an
RMSNorm scaling by 1 + w (`norm_add_unit_offset`), a GeGLU MLP (`GemmaMLP`, GELU with the tanh approximation of
`gelu_pytorch_tanh`), token embeddings times sqrt(hidden_size) in the embedding's dtype (`scale_embeddings`), a
tied head and a head size set apart from the width (`head_dim`, 256 in the released models).

Gemma 2 and 3 are other `model_type`s, refused: their norms after each sub-layer as well as before, Gemma 2's
attention-score scalar and soft-capping and Gemma 3's two RoPE bases have no field here yet.
"""

from __future__ import annotations

from typing import Any

from captioner.lm.convert import Family
from captioner.lm.gpt2 import GELU
from captioner.lm.llama import llama_fields, llama_weights


def gemma_config(hf: Any) -> dict[str, Any]:
    act = getattr(hf, "hidden_activation", None) or hf.hidden_act  # transformers 4 named it hidden_activation
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


GEMMA = Family("Gemma", gemma_config, llama_weights)
