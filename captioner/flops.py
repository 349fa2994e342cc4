"""Model FLOPs of one training step of an encoder-decoder captioner, counted honestly (for MFU).

nanoGPT's 6·N·T counts parameters once per text token; here that undercounts: the encoder runs over every image
token, and the cross-attention keys/values are projections of all image tokens in every decoder layer.
Forward FLOPs are 2 per multiply-add; attention scores and their weighted sums are counted in full (no causal
halving, as nanoGPT does); backward is 2x forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from captioner.model import Captioner


@dataclass
class StepFlops:
    encoder: float  # per image, forward
    bridge: float  # per image, forward: image-token LayerNorm/projection + every layer's cross K/V projection
    decoder: float  # per caption of T tokens, forward: text-token matmuls, attention, LM head

    def training(self, images: int, frozen_encoder: bool = False, cached_features: bool = False) -> float:
        """FLOPs of one training step: x3 for trained parts, x1 for a frozen encoder, 0 for cached features."""
        enc = 0.0 if cached_features else self.encoder * (1 if frozen_encoder else 3)
        return images * (enc + 3 * (self.bridge + self.decoder))


def stem_macs(backbone: nn.Module, image_tokens: int) -> int:
    """Multiply-adds of a ViT's patch embedding per image: each conv's weights once per output position. The
    patchify conv has one position per token; a conv stem's early stages run at 4x, 16x ... the token count."""
    embed = getattr(backbone, "patch_embed", None)
    convs = [m for m in embed.modules() if isinstance(m, nn.Conv2d)] if embed is not None else []
    patch = math.prod(c.stride[0] for c in convs)
    macs, stride = 0, 1
    for conv in convs:  # in forward order (timm's ConvStem is a Sequential)
        stride *= conv.stride[0]
        macs += conv.weight.numel() * image_tokens * (patch // stride) ** 2
    return macs


def step_flops(model: Captioner, image_tokens: int, prefix_tokens: int, text_tokens: int) -> StepFlops:
    """FLOPs of `model` for images of `image_tokens` patches (+ `prefix_tokens` class/register tokens) and
    captions of `text_tokens` tokens."""
    backbone, cfg = model.encoder.backbone, model.config
    n_enc = image_tokens + prefix_tokens
    stem = stem_macs(backbone, image_tokens)
    enc_params = sum(
        p.numel()
        for n, p in backbone.named_parameters()
        if p.ndim >= 2 and "pos_embed" not in n and not n.startswith("patch_embed.")
    )
    enc_layers = len(getattr(backbone, "blocks", []))
    width = model.encoder.proj.in_features  # the backbone's num_features
    encoder = 2 * (n_enc * enc_params + stem) + enc_layers * 4 * n_enc * n_enc * width
    d, t, n = cfg.n_embd, text_tokens, image_tokens
    bridge = 2 * n * width * d + cfg.n_layer * 2 * n * d * 2 * d
    per_layer = 3 * d * d + d * d + d * d + d * d + 8 * d * d  # qkv, proj, cross q, cross proj, mlp
    decoder = 2 * t * (cfg.n_layer * per_layer + d * cfg.vocab_size)
    decoder += cfg.n_layer * (4 * t * t * d + 4 * t * n * d)  # self-attention, cross-attention
    return StepFlops(float(encoder), float(bridge), float(decoder))
