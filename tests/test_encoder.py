import pytest
import torch
from timm.layers import build_sincos2d_pos_embed

from captioner.config import CaptionerConfig
from captioner.encoder import ImageEncoder


def test_sincos_position_init_is_timms_table_and_still_trains(tiny_config: CaptionerConfig):
    encoder = ImageEncoder(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_pos_init": "sincos"}))
    pos = encoder.backbone.pos_embed  # (1, 1 + h*w, De): the class token's position first
    table = build_sincos2d_pos_embed(list(encoder.backbone.patch_embed.grid_size), pos.shape[-1])
    assert torch.equal(pos[0, 1:], table)
    assert torch.count_nonzero(pos[0, 0]) == 0
    assert pos.requires_grad


def test_timm_position_init_is_timms_own(tiny_config: CaptionerConfig):
    pos = ImageEncoder(tiny_config).backbone.pos_embed
    assert pos.std() < 0.05  # timm's trunc_normal(std=0.02), far from the sin-cos table's ~0.5


def test_unknown_position_init_names_the_field(tiny_config: CaptionerConfig):
    with pytest.raises(ValueError, match="encoder_pos_init.*'sinus'.*timm.*sincos"):
        ImageEncoder(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_pos_init": "sinus"}))


def test_unknown_position_init_is_refused_with_pretrained_weights_too(tiny_config: CaptionerConfig, monkeypatch):
    import captioner.encoder as encoder

    backbone = ImageEncoder(tiny_config).backbone  # stands in for hub weights (no download here)
    monkeypatch.setattr(encoder, "create_backbone", lambda config, pretrained: backbone)
    with pytest.raises(ValueError, match="encoder_pos_init"):
        ImageEncoder(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_pos_init": "sinus"}), pretrained=True)


def test_sincos_needs_a_learned_position_embedding():
    config = CaptionerConfig(encoder_name="resnet18", encoder_pos_init="sincos")
    with pytest.raises(ValueError, match="learned position embedding.*ResNet"):
        ImageEncoder(config)
