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

from captioner.config import CaptionerConfig
from captioner.model import Captioner


@dataclass
class StepFlops:
    encoder: float  # per image, forward
    bridge: float  # per image, forward: image-token LayerNorm/projection + each cross layer's K/V projection
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
    decoder, bridge = decoder_flops(cfg, text_tokens, image_tokens)
    return StepFlops(float(encoder), float(2 * image_tokens * width * cfg.n_embd + bridge), float(decoder))


def decoder_flops(cfg: CaptionerConfig, text_tokens: int, image_tokens: int) -> tuple[int, int]:
    """Forward FLOPs of the decoder for one caption of `text_tokens` (matmuls, attention, LM head) and of its
    cross-attention keys/values over `image_tokens`, for the blocks the config describes (grouped heads, the MLP's
    width and gating, cross-attention only in its cross layers)."""
    d, t, n = cfg.n_embd, text_tokens, image_tokens
    nh, ng, hs = cfg.heads()
    q, kv = nh * hs, ng * hs
    mlp = d * cfg.mlp_size() * (3 if cfg.mlp_class_name != "GptNeoxMLP" else 2)  # (gate +) up + down
    cross = len(cfg.cross_layers())
    self_layer = d * (q + 2 * kv) + q * d + mlp  # qkv, proj, MLP
    cross_layer = d * q + q * d + mlp * cfg.cross_mlp  # cross q, cross proj, cross MLP
    decoder = 2 * t * (cfg.n_layer * self_layer + cross * cross_layer + d * cfg.vocab_size)
    decoder += cfg.n_layer * 4 * t * t * q + cross * 4 * t * n * q  # self-attention, cross-attention
    return decoder, cross * 2 * n * d * 2 * kv
