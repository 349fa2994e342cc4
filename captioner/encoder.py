"""Image encoder: a timm model used as a backbone (`num_classes=0`), its patch tokens projected to the decoder width."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from captioner.config import CaptionerConfig


def timm_kwargs(config: CaptionerConfig) -> dict[str, Any]:
    """Keyword arguments for `timm.create_model` from our config."""
    kwargs: dict[str, Any] = dict(config.encoder_kwargs)
    if config.encoder_img_size is not None:
        kwargs["img_size"] = config.encoder_img_size
    if config.encoder_patch_size is not None:
        kwargs["patch_size"] = config.encoder_patch_size
    return kwargs


def create_backbone(config: CaptionerConfig, pretrained: bool) -> nn.Module:
    """`timm.create_model(name, num_classes=0)`: hub weights when `pretrained`, a local file when
    `config.encoder_checkpoint` is set (through timm's own loader), else random weights."""
    kwargs = timm_kwargs(config)
    if pretrained and config.encoder_checkpoint:
        path = Path(config.encoder_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"encoder_checkpoint {path} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        backbone = timm.create_model(config.encoder_name, pretrained=pretrained, num_classes=0, **kwargs)
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        names = sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True)))
        close = difflib.get_close_matches(config.encoder_name, names, n=5, cutoff=0.6)
        raise ValueError(
            f"unknown timm model {config.encoder_name!r}; closest names: {close or 'none'} "
            "(timm.list_models('*vit*') lists them all)"
        ) from err
    drop_pooling_head(backbone)
    return backbone


def drop_pooling_head(backbone: nn.Module) -> None:
    """Remove a pooling head with parameters (SigLIP's attention pool, timm's `global_pool="map"`) through timm's
    `reset_classifier(0, "")`: the captioner reads the patch tokens of `forward_features`, so the head would never
    run, and its weights would only take memory, optimiser state and DDP's unused-parameter search."""
    if getattr(backbone, "attn_pool", None) is not None:
        backbone.reset_classifier(0, global_pool="")  # type: ignore[operator]


POS_INITS = ("timm", "sincos")


def init_position_embedding(backbone: nn.Module, mode: str, pretrained: bool) -> None:
    """Start a ViT's learned position embedding from timm's 2D sin-cos table ("sincos") or leave timm's
    initialisation ("timm"); pretrained weights keep theirs. Prefix (class/register) positions start at zero. The
    mode is checked either way, so a misspelt value never passes silently."""
    if mode not in POS_INITS:
        raise ValueError(f"config field 'encoder_pos_init' is {mode!r}; choose one of {POS_INITS}")
    if mode == "timm" or pretrained:
        return
    pos = getattr(backbone, "pos_embed", None)
    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    if not isinstance(pos, nn.Parameter) or grid is None:
        raise ValueError(
            f"encoder_pos_init 'sincos' needs a ViT with a learned position embedding; {type(backbone).__name__} "
            "has none (use 'timm')"
        )
    from timm.layers import build_sincos2d_pos_embed

    table = build_sincos2d_pos_embed(list(grid), pos.shape[-1])  # (h*w, De)
    prefix = pos.shape[1] - table.shape[0]  # class/register tokens with their own positions (0 when none)
    with torch.no_grad():
        pos.zero_()
        pos[0, prefix:] = table.to(pos.dtype)


def install_conv_stem(backbone: nn.Module, channels: list[int] | None) -> None:
    """Replace a timm ViT's patchify conv (kernel = stride = patch) with timm's `ConvStem`: a 3x3 stride-2 conv +
    BatchNorm + ReLU per entry of `channels`, then a 1x1 conv to the ViT width. Tokens, grid and positions stay."""
    if channels is None:
        return
    proj = getattr(getattr(backbone, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size != proj.stride:
        raise ValueError(
            f"encoder_conv_stem needs a ViT with a patchify conv; {type(backbone).__name__} has none (set it to null)"
        )
    patch = proj.stride[0]
    if patch & (patch - 1):
        raise ValueError(f"encoder_conv_stem halves the image per stage; the patch size {patch} is not a power of two")
    if not channels or 2 ** len(channels) != patch:
        raise ValueError(
            f"encoder_conv_stem {channels} has {len(channels)} stride-2 stages; the patch size {patch} needs "
            f"{patch.bit_length() - 1} (one per halving)"
        )
    from timm.models.vision_transformer_hybrid import ConvStem

    depth = len(channels) + 1
    backbone.get_submodule("patch_embed").proj = ConvStem(  # (B, 3, H, W) -> (B, De, H / patch, W / patch)
        in_chans=proj.in_channels,
        depth=depth,
        channels=(*channels, proj.out_channels),
        kernel_size=(3,) * len(channels) + (1,),
        stride=(2,) * len(channels) + (1,),
    )


class ImageEncoder(nn.Module):
    """timm backbone -> patch tokens (B, N, De) -> LayerNorm + Linear -> image memory (B, N, D)."""

    def __init__(self, config: CaptionerConfig, pretrained: bool | None = None) -> None:
        super().__init__()
        if pretrained is None:
            pretrained = config.encoder_pretrained or config.encoder_checkpoint is not None
        self.backbone = create_backbone(config, pretrained)
        install_conv_stem(self.backbone, config.encoder_conv_stem)
        init_position_embedding(self.backbone, config.encoder_pos_init, pretrained)
        self.num_prefix_tokens = getattr(self.backbone, "num_prefix_tokens", 0)
        width = int(getattr(self.backbone, "num_features"))  # timm's feature width
        self.ln = nn.LayerNorm(width)  # separate norm on the image tokens (open_clip's ln_1_kv idea)
        self.proj = nn.Linear(width, config.n_embd)

    def train(self, mode: bool = True) -> ImageEncoder:
        """A frozen BatchNorm layer (a conv stem's, a ResNet's: its weights do not train) stays in eval mode, so its
        running statistics stay those the weights were trained with (mmdetection's `norm_eval`); the rest follows
        `mode`. Frozen weights with moving statistics would change the image features of a frozen encoder."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    params = list(m.parameters()) or list(self.backbone.parameters())  # affine=False: the backbone's
                    if not any(p.requires_grad for p in params):
                        m.eval()
        return self

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, De) patch tokens, class/register tokens dropped."""
        feats = getattr(self.backbone, "forward_features")(images)  # timm's API, not nn.Module's
        if feats.ndim == 4:  # convolutional backbones: (B, De, h, w) -> (B, h*w, De)
            return feats.flatten(2).transpose(1, 2)
        return feats[:, self.num_prefix_tokens :]

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, De) patch tokens (from the backbone or the feature cache, any float dtype) -> (B, N, D)."""
        return self.proj(self.ln(tokens.to(self.ln.weight.dtype)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.patch_tokens(images))  # (B, N, D)
