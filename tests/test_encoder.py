from dataclasses import replace

import pytest
import torch
from timm.layers import build_sincos2d_pos_embed

from captioner.config import CaptionerConfig
from captioner.encoder import ImageEncoder
from captioner.model import Captioner


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


def test_conv_stem_replaces_the_patchify_and_keeps_the_tokens(tiny_config: CaptionerConfig):
    from timm.models.vision_transformer_hybrid import ConvStem

    encoder = ImageEncoder(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_conv_stem": [4, 8, 16]}))
    stem = encoder.backbone.patch_embed.proj
    assert isinstance(stem, ConvStem)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (4, (3, 3), (2, 2)),
        (8, (3, 3), (2, 2)),
        (16, (3, 3), (2, 2)),
        (32, (1, 1), (1, 1)),
    ]
    memory = encoder(torch.randn(2, 3, 32, 32))
    assert memory.shape == (2, 16, tiny_config.n_embd)  # 32 px / 8 px patches: 4 x 4 tokens, as without a stem


def test_conv_stem_needs_one_stage_per_halving_of_the_patch(tiny_config: CaptionerConfig):
    message = r"encoder_conv_stem \[8, 16\] has 2 stride-2 stages; the patch size 8 needs 3"
    with pytest.raises(ValueError, match=message):
        ImageEncoder(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_conv_stem": [8, 16]}))


def test_conv_stem_needs_a_power_of_two_patch(tiny_config: CaptionerConfig):
    config = {**tiny_config.to_dict(), "encoder_patch_size": 14, "encoder_img_size": 28, "encoder_conv_stem": [8]}
    with pytest.raises(ValueError, match="patch size 14 is not a power of two"):
        ImageEncoder(CaptionerConfig(**config))


def test_conv_stem_needs_a_vit():
    with pytest.raises(ValueError, match="encoder_conv_stem needs a ViT.*ResNet"):
        ImageEncoder(CaptionerConfig(encoder_name="resnet18", encoder_conv_stem=[8, 16, 32]))


def test_frozen_batchnorm_keeps_its_statistics(tiny_config: CaptionerConfig):
    encoder = ImageEncoder(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_conv_stem": [4, 8, 16]}))
    bn = next(m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    encoder.backbone.requires_grad_(False)
    encoder.backbone.norm.requires_grad_(True)  # the `cross_attention` policy trains the LayerNorms only
    encoder.train()
    before = bn.running_mean.clone()
    encoder(torch.randn(4, 3, 32, 32))
    assert not bn.training and encoder.backbone.blocks.training and encoder.proj.training
    assert torch.equal(bn.running_mean, before)
    encoder.backbone.requires_grad_(True)  # thawed: its statistics move again
    encoder.train()
    encoder(torch.randn(4, 3, 32, 32))
    assert bn.training and not torch.equal(bn.running_mean, before)


def test_an_attention_pooling_head_is_dropped_and_every_encoder_weight_trains(tiny_config: CaptionerConfig):
    """SigLIP's ViTs pool with an attention head (`global_pool="map"`) that forward_features never runs."""
    kwargs = {**tiny_config.encoder_kwargs, "global_pool": "map", "class_token": False}
    model = Captioner(replace(tiny_config, encoder_kwargs=kwargs))
    assert model.encoder.backbone.attn_pool is None
    assert not [n for n, _ in model.named_parameters() if "attn_pool" in n]
    ids = torch.randint(3, tiny_config.vocab_size, (2, 6))
    model.loss(torch.randn(2, 3, 32, 32), ids, ids).backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_a_package_saved_with_the_pooling_head_still_loads(tiny_config: CaptionerConfig, tokenizer, tmp_path, images):
    """Packages written before the head was dropped hold its tensors: they are left unread."""
    from safetensors.torch import load_file, save_file

    kwargs = {**tiny_config.encoder_kwargs, "global_pool": "map", "class_token": False}
    model = Captioner(replace(tiny_config, encoder_kwargs=kwargs, vocab_size=tokenizer.vocab_size)).eval()
    package = model.save_pretrained(tmp_path / "pkg", tokenizer)
    weights = load_file(package / "model.safetensors")
    weights["encoder.backbone.attn_pool.latent"] = torch.zeros(1, 1, 32)  # as the earlier package held it
    save_file(weights, package / "model.safetensors")
    loaded, _ = Captioner.from_pretrained(package)
    ids = torch.randint(3, tokenizer.vocab_size, (3, 5))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images, ids), model(images, ids))
