"""Start the decoder from GPT-2 (any GPT-2 family checkpoint, hub name or local folder) through transformers.

GPT-2 blocks are (ln_1, attn, ln_2, mlp); ours are (ln_1, attn, ln_2 + cross-attention, ln_3, mlp), so GPT-2's
ln_2 maps to our ln_3. GPT-2 stores Linear weights as Conv1D (in, out): they are transposed. The new
cross-attention layers are gated with tanh(gate), gate = 0, so before training the decoder computes GPT-2.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import torch

from captioner.config import CaptionerConfig
from captioner.decoder import TextDecoder

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_config(config: CaptionerConfig) -> CaptionerConfig:
    """`config` with the decoder fields of the GPT-2 named by `config.decoder_init_from`."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(config.decoder_init_from)
    if getattr(hf, "model_type", None) != "gpt2":
        raise ValueError(f"decoder_init_from={config.decoder_init_from!r} is a {hf.model_type} model; GPT-2 is needed")
    return replace(
        config,
        vocab_size=hf.vocab_size,
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        n_embd=hf.n_embd,
        block_size=min(config.block_size, hf.n_positions),
        bias=True,
        gelu_approximate="tanh",
        cross_gate=True,
    )


def gpt2_state_dict(name_or_path: str) -> dict[str, torch.Tensor]:
    """GPT-2 weights renamed and transposed into our decoder's names."""
    from transformers import GPT2LMHeadModel

    try:
        hf = GPT2LMHeadModel.from_pretrained(name_or_path).state_dict()
    except pickle.UnpicklingError as err:  # transformers loads a .bin with torch.load(weights_only=True)
        raise ValueError(
            f"decoder_init_from={name_or_path}: its PyTorch .bin weights need arbitrary unpickling (which could run "
            "code) and were refused; use a GPT-2 with model.safetensors (if you trust the file, load it once in "
            "Python with transformers and save_pretrained it: that writes safetensors)"
        ) from err
    out: dict[str, torch.Tensor] = {}
    for key, value in hf.items():
        if not key.startswith("transformer.") or key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # lm_head is tied to wte; attn.bias is a causal-mask buffer in old checkpoints
        name = key.removeprefix("transformer.")
        if ".ln_2." in name:
            name = name.replace(".ln_2.", ".ln_3.")
        if name.endswith(_CONV1D):
            value = value.t()
        out[name] = value
    return out


def load_gpt2_into(decoder: TextDecoder, name_or_path: str) -> None:
    """Copy GPT-2 weights into `decoder`; cross-attention layers and gates keep their initialisation."""
    state = gpt2_state_dict(name_or_path)
    block_size = decoder.wpe.weight.size(0)
    state["wpe.weight"] = state["wpe.weight"][:block_size]
    own = decoder.state_dict()
    for key, value in state.items():
        if key not in own:
            raise ValueError(f"GPT-2 tensor {key!r} has no place in the decoder")
        if own[key].shape != value.shape:
            raise ValueError(
                f"GPT-2 tensor {key!r} has shape {tuple(value.shape)}, the decoder expects {tuple(own[key].shape)}"
            )
    new = (".cross.", "cross_gate", ".ln_2.", "lm_head.weight")  # cross-attention and its norm; tied head
    missing = [k for k in own if k not in state and not any(n in k for n in new)]
    if missing:
        raise ValueError(f"GPT-2 checkpoint {name_or_path} lacks {missing[:5]}")
    decoder.load_state_dict(state, strict=False)
