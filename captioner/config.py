"""Model configuration: one dataclass with named presets (litgpt style). No torch import here."""

from __future__ import annotations

import json
import types
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple, Union, get_args, get_origin, get_type_hints

NORMS = ("LayerNorm", "RMSNorm")
MLPS = ("GptNeoxMLP", "LLaMAMLP", "GemmaMLP")
POSITIONS = ("learned", "rope")
# the key sets of rope_adjustments: Llama 3's scaling, then linear scaling
ROPE_ADJUSTMENTS = ({"factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len"}, {"factor"})


# the decoder fields a pretrained language model's checkpoint decides (`captioner.lm`); the others (where the image
# enters, gates, dropout, block_size up to the LM's) stay the config's
LM_FIELDS = ("vocab_size", "n_layer", "n_head", "n_embd", "n_query_groups", "head_size", "bias", "attn_bias",
             "norm_class_name", "norm_eps", "norm_add_unit_offset", "norm_qk", "positions", "rope_base",
             "rope_adjustments", "rope_layers", "mlp_class_name", "intermediate_size", "gelu_approximate",
             "scale_embeddings", "final_logit_softcapping", "attention_logit_softcapping", "attention_scores_scalar",
             "post_attention_norm", "post_mlp_norm", "tie_word_embeddings")  # fmt: skip


class Heads(NamedTuple):
    n_head: int  # query heads
    n_query_groups: int  # key/value heads; each serves n_head // n_query_groups query heads
    head_size: int


@dataclass
class CaptionerConfig:
    """Everything needed to rebuild a `Captioner` (saved as `config.json` in a model package).

    Encoder fields are handed to `timm.create_model`; decoder fields describe its blocks (GPT-style by default,
    Llama-style with RMSNorm, RoPE, a gated MLP and grouped heads; `captioner.lm` sets them from a pretrained LM).
    """

    # image encoder (timm)
    encoder_name: str = "vit_tiny_patch16_224"
    encoder_pretrained: bool = False
    encoder_img_size: int | None = None  # None: the timm model's own size
    encoder_patch_size: int | None = None  # None: the timm model's own patch size
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. embed_dim/depth/num_heads for ViTs
    encoder_checkpoint: str | None = None  # a local weights file for the timm model (instead of the hub)
    # "sincos": a randomly initialised ViT's learned position embedding starts as the fixed 2D sin-cos table of
    # MoCo v3 / MAE instead of timm's near-zero noise (std 0.02), so positions are readable from the first step
    # (it still trains). Ignored when pretrained weights are loaded; "timm" keeps timm's own initialisation.
    encoder_pos_init: str = "timm"
    # channels of a convolutional stem in place of a ViT's one-layer patchify (Xiao et al. 2021, "Early convolutions
    # help transformers see better"): one 3x3 stride-2 conv + BatchNorm + ReLU per entry, then a 1x1 conv to the ViT
    # width; 2 ** len(channels) must equal the patch size. None keeps timm's patch embedding.
    encoder_conv_stem: list[int] | None = None
    # text decoder: one block described by these fields (litgpt's names where it has one); the defaults are the
    # GPT-2-style decoder (LayerNorm, learned positions, GELU MLP, one key/value head per query head, tied head)
    vocab_size: int = 512
    block_size: int = 40  # longest caption in tokens, BOS and EOS included
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_query_groups: int | None = None  # key/value heads (grouped-query attention); None: n_head
    head_size: int | None = None  # None: n_embd // n_head
    dropout: float = 0.0
    bias: bool = True  # biases of every Linear and LayerNorm
    attn_bias: bool = False  # biases of the q/k/v projections even when `bias` is off (Qwen2)
    norm_class_name: str = "LayerNorm"  # LayerNorm | RMSNorm
    norm_eps: float = 1e-5
    norm_add_unit_offset: bool = False  # RMSNorm scales by 1 + w, w starting at 0 (Gemma)
    norm_qk: bool = False  # an RMS/LayerNorm over each head of the queries and keys (Qwen3, Gemma 3)
    positions: str = "learned"  # learned (wpe) | rope (rotary, on the self-attention's queries and keys only)
    rope_base: float = 10000.0  # RoPE theta
    # a language model's rope scaling: {factor, low_freq_factor, high_freq_factor, original_max_seq_len} (Llama 3's
    # "llama3" type) or {factor} (linear: positions divided by it); None: plain RoPE
    rope_adjustments: dict[str, float] | None = None
    rope_layers: list[int] | None = None  # the blocks whose self-attention uses RoPE (SmolLM3's); None: every block
    mlp_class_name: str = "GptNeoxMLP"  # GptNeoxMLP (GELU) | LLaMAMLP (gated SiLU, SwiGLU) | GemmaMLP (gated GELU)
    intermediate_size: int | None = None  # the MLP's hidden width; None: 4 * n_embd
    gelu_approximate: str = "none"  # "tanh" for GPT-2 weights (its gelu_new) and Gemma's GeGLU
    scale_embeddings: bool = False  # token embeddings times sqrt(n_embd) (Gemma)
    final_logit_softcapping: float | None = None  # logits = c * tanh(logits / c) (Gemma 2)
    # the self-attention's scores = c * tanh(scores / c) before the softmax (Gemma 2); None: plain scores
    attention_logit_softcapping: float | None = None
    attention_scores_scalar: int | None = None  # the self-attention scales by its -1/2 power; None: head_size (Gemma 2)
    post_attention_norm: bool = False  # a norm on the self-attention's output before the residual add (Gemma 2)
    post_mlp_norm: bool = False  # a norm on the MLP's output before the residual add (Gemma 2)
    tie_word_embeddings: bool = True  # the LM head is the token embedding (GPT-2); False: its own weights (Llama)
    # where the image enters: k = a cross-attention sub-layer in blocks k-1, 2k-1, ... (every k-th block counted
    # from the first, so the last block of each group of k has one, as OpenFlamingo's cross_attn_every_n_layers;
    # 1 = every block), or an explicit list of block indices (as Llama 3.2 Vision's cross_attention_layers).
    # Blocks without one have no cross-attention parameters.
    cross_attention_every: int | list[int] = 1
    cross_gate: bool = False  # tanh gate on each cross-attention (and cross MLP), starting at zero (Flamingo)
    cross_mlp: bool = False  # an MLP after each cross-attention, gated like it (Flamingo, Llama 3.2 Vision)
    # a pretrained causal LM (hub id or local folder of a transformers checkpoint): the decoder takes its sizes,
    # blocks and weights; families in captioner.lm (gpt2, llama, mistral, ...)
    decoder_init_from: str | None = None
    # image preprocessing (captioner.preprocess.Preprocessing fields): empty = timm's data config for the encoder
    # with the whole image kept; any field given here overrides it. A built model records the full resolved dict.
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> CaptionerConfig:
        """A preset by name (`tiny`, `base`), with field overrides; the demo's model is in configs/shapes.yaml."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionerConfig:
        """A config from plain data, every field checked against its declared type (`conforms`)."""
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object of fields, not {type(data).__name__}")
        hints = get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields are {sorted(known)}")
        for name, value in data.items():
            if not conforms(value, hints[name]):
                raise ValueError(f"config field {name!r} is {value!r}; expected a {type_name(hints[name])}")
        check_preprocessing(data.get("preprocessing") or {})
        return cls(**data)

    # ---- the decoder's derived sizes, and the checks of its block options ------------------------------------------
    def heads(self) -> Heads:
        """Query heads, key/value heads and the size of a head, resolved (None fields take their defaults)."""
        return Heads(self.n_head, self.n_query_groups or self.n_head, self.head_size or self.n_embd // self.n_head)

    def mlp_size(self) -> int:
        return self.intermediate_size or 4 * self.n_embd

    def cross_layers(self) -> list[int]:
        """Indices of the blocks with a cross-attention sub-layer (see `cross_attention_every`)."""
        every, n = self.cross_attention_every, self.n_layer
        if isinstance(every, list):
            if not every or sorted(set(every)) != every or not all(0 <= i < n for i in every):
                raise ValueError(
                    f"cross_attention_every={every}: give increasing block indices from 0 to {n - 1} (n_layer={n})"
                )
            return list(every)
        if not 1 <= every <= n:
            raise ValueError(f"cross_attention_every={every} is beyond the decoder's n_layer={n}; give 1 to {n}")
        return [i for i in range(n) if (i + 1) % every == 0]

    def check_decoder(self) -> None:
        """Refuse decoder options no block can be built from, naming the field."""
        choices = {"norm_class_name": NORMS, "mlp_class_name": MLPS, "positions": POSITIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        for name in ("n_layer", "n_head", "n_embd", "n_query_groups", "head_size", "intermediate_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; give a positive number")
        heads = self.heads()
        if self.head_size is None and self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}; set head_size")
        if heads.n_head % heads.n_query_groups:
            raise ValueError(f"n_query_groups={self.n_query_groups} must divide n_head={self.n_head}")
        if self.positions == "rope" and heads.head_size % 2:
            raise ValueError(f"RoPE rotates pairs of a head's dimensions: head_size={heads.head_size} must be even")
        if self.rope_adjustments is not None and set(self.rope_adjustments) not in ROPE_ADJUSTMENTS:
            raise ValueError(
                f"rope_adjustments={self.rope_adjustments}: give the keys {sorted(ROPE_ADJUSTMENTS[0])} (llama3) "
                f"or {sorted(ROPE_ADJUSTMENTS[1])} (linear)"
            )
        if self.rope_layers is not None and not all(0 <= i < self.n_layer for i in self.rope_layers):
            raise ValueError(f"rope_layers={self.rope_layers}: give block indices from 0 to {self.n_layer - 1}")
        for name in ("final_logit_softcapping", "attention_logit_softcapping", "attention_scores_scalar"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}; give a positive number")
        self.cross_layers()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CaptionerConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); a model package's config.json was changed") from err
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err


def conforms(value: Any, hint: Any) -> bool:
    """Whether JSON-like `value` is of type `hint` (a field's annotation): unions, `list[X]`, `dict[K, V]`, `Any`,
    None; an int is a float, a bool is neither."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # timm's, for evaluation
CROP_MODES = ("center", "squash", "border")


def check_preprocessing(values: dict[str, Any]) -> None:
    """Refuse preprocessing values (any subset of `captioner.preprocess.Preprocessing`'s fields) that no transform
    can use, naming the field: an RGB input size of positive sides, a known interpolation and crop mode, one finite
    mean and one positive std per channel, a crop_pct in [0.1, 2]."""
    import math

    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    def fail(name: str, why: str) -> ValueError:
        return ValueError(f"preprocessing {name} is {values[name]!r}; {why}")

    if "input_size" in values:
        size = values["input_size"]
        if not (isinstance(size, list | tuple) and len(size) == 3 and size[0] == 3
                and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 16384 for n in size)):  # fmt: skip
            raise fail("input_size", "give [3, height, width] with sides from 1 to 16384")
    if "interpolation" in values and values["interpolation"] not in INTERPOLATIONS:
        raise fail("interpolation", f"choose one of {', '.join(INTERPOLATIONS)}")
    if "crop_mode" in values and values["crop_mode"] not in CROP_MODES:
        raise fail("crop_mode", f"choose one of {', '.join(CROP_MODES)}")
    if "crop_pct" in values and not (number(values["crop_pct"]) and 0.1 <= values["crop_pct"] <= 2):
        raise fail("crop_pct", "give a number from 0.1 to 2 (1.0 keeps the whole image)")
    # pixels in [0, 1] become (x - mean) / std in float32: these ranges keep that finite (timm's are ~0.5 and ~0.25)
    for name, low, high in (("mean", -100.0, 100.0), ("std", 1e-3, 100.0)):
        value = values.get(name)
        if name in values and not (isinstance(value, list | tuple) and len(value) == 3
                                   and all(number(v) and low <= v <= high for v in value)):  # fmt: skip
            raise fail(name, f"give three numbers from {low:g} to {high:g}, one per RGB channel")


PRESETS: dict[str, CaptionerConfig] = {
    # smallest thing that exercises every code path; for tests
    "tiny": CaptionerConfig(
        encoder_img_size=32,
        encoder_patch_size=8,
        encoder_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2},
        vocab_size=300,
        block_size=24,
        n_layer=1,
        n_head=2,
        n_embd=32,
    ),
    # ViT-B/16 at 224 px + a GPT-2-small-sized decoder
    "base": CaptionerConfig(
        encoder_name="vit_base_patch16_224",
        vocab_size=50257,
        block_size=64,
        n_layer=12,
        n_head=12,
        n_embd=768,
        dropout=0.1,
    ),
}
