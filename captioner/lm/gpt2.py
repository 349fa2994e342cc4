"""GPT-2 (any GPT-2 family checkpoint: gpt2, distilgpt2, a local folder).

GPT-2 blocks are (ln_1, attn, ln_2, mlp); ours are (ln_1, attn, [ln_2 + cross-attention], ln_3, mlp), so GPT-2's
ln_2 maps to our ln_3. GPT-2 stores Linear weights as Conv1D (in, out): they are transposed.
"""

from __future__ import annotations

from typing import Any

from captioner.config import CaptionerConfig
from captioner.lm.convert import Family, State, without_prefix

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# a transformers activation name -> the approximation of torch's GELU it is
GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


def gpt2_config(hf: Any) -> dict[str, Any]:
    if hf.activation_function not in GELU or hf.scale_attn_by_inverse_layer_idx or hf.reorder_and_upcast_attn:
        raise ValueError("a GPT-2 with GELU (gelu_new or gelu) and plain attention scaling is needed")
    return {
        "vocab_size": hf.vocab_size,
        "n_layer": hf.n_layer,
        "n_head": hf.n_head,
        "n_embd": hf.n_embd,
        "intermediate_size": hf.n_inner,
        "norm_eps": hf.layer_norm_epsilon,
        "gelu_approximate": GELU[hf.activation_function],
        "tie_word_embeddings": hf.tie_word_embeddings,
        "block_size": hf.n_positions,
    }


def gpt2_weights(hf: State, config: CaptionerConfig) -> State:
    out: State = {}
    for name, value in without_prefix(hf, "transformer.").items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of old checkpoints
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # the tied head is wte
        if ".ln_2." in name:
            name = name.replace(".ln_2.", ".ln_3.")
        out[name] = value.t() if name.endswith(_CONV1D) else value
    if "wpe.weight" in out:
        out["wpe.weight"] = out["wpe.weight"][: config.block_size]
    return out


GPT2 = Family("GPT-2", gpt2_config, gpt2_weights)
