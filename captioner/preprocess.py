"""THE image preprocessing of a model: resolved once from timm's data config for its encoder, recorded in the model
package (`config.json`, field `preprocessing`), and turned into the transforms that training, validation, the
feature cache, `caption`, `evaluate` and the Python API all use (open_clip's "transforms come from the model").

Captioning default: the whole image, resized to the input size (`crop_pct` 1.0, `crop_mode` "squash", as BLIP
preprocesses): a centre crop can cut away what a caption names, and captions talk about positions. timm's own
interpolation, mean and std are kept. Any field can be set in `model.config.preprocessing`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from torch import nn

from captioner.config import check_preprocessing

Transform = Callable[[Image.Image], torch.Tensor]
log = logging.getLogger(__name__)

CAPTIONING_DEFAULTS = {"crop_pct": 1.0, "crop_mode": "squash"}


@dataclass(frozen=True)
class Preprocessing:
    """What turns a decoded RGB image into the tensor the encoder sees (timm's data-config keys)."""

    input_size: tuple[int, int, int]  # (C, H, W)
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    crop_mode: str = "squash"  # timm: center | squash | border

    def __post_init__(self) -> None:
        check_preprocessing(asdict(self))  # ValueError naming a field no transform can use

    @classmethod
    def resolve(cls, backbone: nn.Module, img_size: int | None, overrides: dict[str, Any] | None) -> Preprocessing:
        """timm's data config of `backbone` (input size replaced by `img_size`: timm keeps the pretrained size
        when `img_size` is overridden), the captioning defaults, then `overrides`."""
        cfg: dict[str, Any] = dict(resolve_model_data_config(backbone))
        if img_size is not None:
            cfg["input_size"] = (cfg["input_size"][0], img_size, img_size)
        cfg.update(CAPTIONING_DEFAULTS)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides or {}) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing field(s) {unknown}; valid fields are {sorted(known)}")
        cfg.update(overrides or {})
        return cls.from_dict(cfg)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        cfg = {k: v for k, v in data.items() if k in known}
        for key in ("input_size", "mean", "std"):
            cfg[key] = tuple(cfg[key])
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def eval_transform(self) -> Transform:
        """Resize (and crop per `crop_pct` / `crop_mode`), to tensor, normalise: timm's evaluation transform."""
        return create_transform(**asdict(self), is_training=False)

    def eval_stages(self) -> tuple[Callable[[Image.Image], Image.Image], Callable[[torch.Tensor], torch.Tensor]]:
        """`eval_transform()` in two parts, for a server that batches: the PIL steps (resize, crop) per image, then
        to-tensor and normalisation as one tensor op on a (B, H, W, 3) uint8 batch of their outputs. The result
        equals stacking `eval_transform()` of each image, bit for bit (the same float ops)."""
        from timm.data.transforms import MaybeToTensor
        from torchvision import transforms as T

        compose = self.eval_transform()
        if not isinstance(compose, T.Compose):
            raise ValueError(f"eval_stages: expected timm's transforms in a Compose, got {compose}")
        steps = list(compose.transforms)
        cut = next(i for i, t in enumerate(steps) if isinstance(t, MaybeToTensor | T.ToTensor))
        rest = steps[cut + 1 :]
        if len(rest) != 1 or not isinstance(rest[0], T.Normalize):
            raise ValueError(f"eval_stages: expected to-tensor then Normalize after the PIL steps, got {rest}")
        mean = torch.as_tensor(rest[0].mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(rest[0].std, dtype=torch.float32).view(1, -1, 1, 1)

        def to_batch(pixels: torch.Tensor) -> torch.Tensor:
            """(B, H, W, 3) uint8 -> (B, 3, H, W) normalised float32."""
            return pixels.permute(0, 3, 1, 2).contiguous().float().div(255).sub(mean).div(std)

        return T.Compose(steps[:cut]), to_batch

    def to_image(self, tensor: torch.Tensor) -> Image.Image:
        """A (3, H, W) input tensor back to the picture the encoder saw (normalisation undone), for figures."""
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        pixels = (tensor.detach().float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()  # (3, H, W)
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())

    def train_transform(self, augment: bool = False) -> Transform:
        """The evaluation transform, or with `augment` timm's random resized crop at scale 0.8-1 with no flip and no
        colour jitter (captions name colours and sides)."""
        if not augment:
            return self.eval_transform()
        cfg = {k: getattr(self, k) for k in ("input_size", "interpolation", "mean", "std")}
        return create_transform(
            **cfg,
            is_training=True,
            scale=(0.8, 1.0),
            hflip=0.0,
            color_jitter=None,  # type: ignore[arg-type]  # timm's hint omits None, which it takes as no jitter
        )
