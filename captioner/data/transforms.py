"""Image preprocessing from timm's data config for the chosen encoder (never hard-coded mean/std)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from timm.data import create_transform

Transform = Callable[[Image.Image], torch.Tensor]


def eval_transform(data_config: dict[str, Any], crop_pct: float | None = None) -> Transform:
    """timm's evaluation transform (resize, centre crop, to tensor, normalise) for `data_config`.

    Args:
        crop_pct: override timm's crop fraction; 1.0 keeps the whole image, which captions that mention
            positions need (a centre crop could cut an object off).
    """
    cfg = dict(data_config)
    if crop_pct is not None:
        cfg["crop_pct"] = crop_pct
    return create_transform(**cfg, is_training=False)
