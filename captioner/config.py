"""Model configuration: one dataclass with named presets (litgpt style). No torch import here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass
class CaptionerConfig:
    """Everything needed to rebuild a `Captioner` (saved as `config.json` in a model package).

    Encoder fields are handed to `timm.create_model`; decoder fields describe our GPT-style decoder.
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
    # text decoder (GPT)
    vocab_size: int = 512
    block_size: int = 40  # longest caption in tokens, BOS and EOS included
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    gelu_approximate: str = "none"  # "tanh" for GPT-2 weights (its gelu_new)
    cross_gate: bool = False  # tanh gate on each cross-attention, starting at zero (Flamingo)
    decoder_init_from: str | None = None  # gpt2 | distilgpt2 | a local folder: GPT-2 weights and tokenizer
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
        """A config from plain data, every field checked against the type of its default."""
        if not isinstance(data, dict):
            raise ValueError(f"a config is a JSON object of fields, not {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields are {sorted(known)}")
        defaults = cls()
        for name, value in data.items():
            default = getattr(defaults, name)
            expected = (int, float) if isinstance(default, float) else type(default)
            wrong = value is not None and default is not None and not isinstance(value, expected)
            if (
                wrong
                or (isinstance(value, bool) and not isinstance(default, bool))
                or (value is None and default is not None)
            ):
                raise ValueError(f"config field {name!r} is {value!r}; expected a {type(default).__name__}")
        check_preprocessing(data.get("preprocessing") or {})
        return cls(**data)

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
