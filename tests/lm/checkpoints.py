"""Tiny random transformers causal LMs saved with `save_pretrained`, as a Hub checkpoint would hold them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}  # fmt: skip


def start(path: Path, **overrides: Any) -> Any:  # a Captioner
    """The tiny preset's captioner started from the LM in `path` (seeded; eval mode), `overrides` its config's."""
    from captioner.config import CaptionerConfig
    from captioner.model import Captioner

    torch.manual_seed(0)
    return Captioner(CaptionerConfig.from_name("tiny", decoder_init_from=str(path), **overrides)).eval()


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
    # weights large enough and caps low enough that the soft-capping bends the scores; a window beyond the captions
    "gemma2": {
        "head_dim": 32,
        "tie_word_embeddings": True,
        "query_pre_attn_scalar": 24,
        "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 3.0,
        "sliding_window": 48,
        "initializer_range": 0.2,
    },
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


# each LM family's tokenizer conventions: its special tokens (in id order, first), the template its post-processor
# prepends, the tokens transformers is told are bos/eos/pad/unk, and the added tokens after them; "split": the text
# split by Qwen's own pattern before the byte-level mapping (a Sequence pre-tokenizer, as Qwen's and Llama 3's)
TOKENIZER_STYLES: dict[str, dict[str, Any]] = {
    "llama": {"specials": ["<unk>", "<s>", "</s>"], "template": "<s>",
              "roles": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}},  # no pad: eos pads
    "qwen": {"specials": ["<|endoftext|>"], "template": None, "split": True,  # no BOS at all
             "roles": {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
             "added": ["<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|box_start|>"]},
    "gemma": {"specials": ["<pad>", "<eos>", "<bos>", "<unk>"], "template": "<bos>",
              "roles": {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}},
}  # fmt: skip


QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+")  # fmt: skip


def save_lm_tokenizer(path: Path, style: str, texts: list[str], vocab_size: int = 300) -> Path:
    """A byte-level BPE trained on `texts` with `style`'s special tokens and post-processor (Llama's and Gemma's
    prepend their BOS), saved by transformers' `save_pretrained` into `path`, as an LM's folder holds it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = TOKENIZER_STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if spec.get("split"):
        split = pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=spec["specials"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if spec.get("added"):
        tok.add_special_tokens(spec["added"])
    if spec["template"]:
        bos = spec["template"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    PreTrainedTokenizerFast(tokenizer_object=tok, **spec["roles"]).save_pretrained(path)
    return path
