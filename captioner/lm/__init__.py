"""Pretrained causal language models as the decoder's start (`decoder_init_from`): one table of families, each a
mapping of its transformers config into our decoder fields and of its weight names into ours (as litgpt's
`convert_hf_checkpoint` does). The cross-attention layers inserted into the LM start behind tanh gates at zero,
so before training the decoder computes the LM exactly. A family is added in one `FAMILIES` row and a module of
its two functions (config, weights)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from captioner.config import LM_FIELDS, CaptionerConfig
from captioner.decoder import TextDecoder, is_inserted
from captioner.lm.convert import Family
from captioner.lm.files import hf_config, lm_folder, model_type, read_weights
from captioner.lm.gemma import GEMMA, GEMMA2
from captioner.lm.gpt2 import GPT2
from captioner.lm.llama import LLAMA
from captioner.lm.qwen import QWEN2, QWEN3

# a transformers config's model_type -> its family (Gemma 3 is refused: see captioner.lm.gemma)
FAMILIES: dict[str, Family] = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "smollm3": LLAMA, "qwen2": QWEN2,
                               "qwen3": QWEN3, "gemma": GEMMA, "gemma2": GEMMA2}  # fmt: skip


class LanguageModel(NamedTuple):
    name: str  # as `decoder_init_from` gives it
    folder: Path
    family: Family
    hf: Any  # its transformers config


def open_lm(name: str) -> LanguageModel:
    """The checkpoint `decoder_init_from` names, its family and config; a model_type not in the table is refused."""
    folder = lm_folder(name)
    kind = model_type(folder, name)
    if kind not in FAMILIES:
        raise ValueError(
            f"decoder_init_from={name} is a {kind!r} model; the supported language models are "
            f"{', '.join(sorted(FAMILIES))}"
        )
    return LanguageModel(name, folder, FAMILIES[kind], hf_config(folder))


def lm_config(config: CaptionerConfig, lm: LanguageModel | None = None) -> CaptionerConfig:
    """`config` with the decoder of the LM `config.decoder_init_from`: every field the LM decides (`LM_FIELDS`)
    from its checkpoint, the others as given, `block_size` at most the LM's, and the gates on."""
    lm = lm or open_lm(str(config.decoder_init_from))
    try:
        fields = lm.family.config(lm.hf)
    except (AttributeError, KeyError, ValueError) as err:
        raise ValueError(f"decoder_init_from={lm.name} ({lm.family.name}): {err}") from err
    fields["block_size"] = min(config.block_size, fields["block_size"])
    defaults = CaptionerConfig()
    return replace(config, **{**{f: getattr(defaults, f) for f in LM_FIELDS}, **fields}, cross_gate=True)


def load_lm_into(decoder: TextDecoder, lm: LanguageModel) -> None:
    """Copy the LM's weights into `decoder` (built from `lm_config`); the inserted layers keep their initialisation."""
    where = f"decoder_init_from={lm.name}: {lm.family.name}"
    state = lm.family.weights(read_weights(lm.folder, lm.name), decoder.config)
    own = decoder.state_dict()
    for key, value in state.items():
        if key not in own:
            raise ValueError(f"{where} tensor {key!r} has no place in the decoder")
        if own[key].shape != value.shape:
            raise ValueError(
                f"{where} tensor {key!r} has shape {tuple(value.shape)}, the decoder expects {tuple(own[key].shape)}"
            )
    tied = ("lm_head.weight",) if decoder.config.tie_word_embeddings else ()
    missing = [k for k in own if k not in state and not is_inserted(k) and k not in tied]
    if missing:
        raise ValueError(f"{where} checkpoint lacks {missing[:5]}")
    decoder.load_state_dict(state, strict=False)
