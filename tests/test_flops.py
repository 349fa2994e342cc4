"""The encoder's FLOPs in `step_flops` against PyTorch's own FLOP counter, with and without a conv stem."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from captioner.config import CaptionerConfig
from captioner.flops import step_flops
from captioner.model import Captioner


@pytest.mark.parametrize("stem", [None, [4, 8, 16]])
def test_encoder_flops_match_torchs_counter(tiny_config: CaptionerConfig, stem):
    from timm.layers import set_fused_attn, use_fused_attn

    fused = use_fused_attn()
    set_fused_attn(False)  # attention as matmuls, which the counter sees (not CPU's fused kernel)
    try:
        model = Captioner(CaptionerConfig.from_dict({**tiny_config.to_dict(), "encoder_conv_stem": stem})).eval()
    finally:
        set_fused_attn(fused)
    images = torch.randn(1, 3, 32, 32)  # (1, 3, H, W): 4 x 4 tokens of 8 px
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.encoder.backbone.forward_features(images)
    ours = step_flops(model, 16, model.encoder.num_prefix_tokens, 1).encoder
    assert ours == pytest.approx(counter.get_total_flops(), rel=0.02)  # the class token's 2·17·32


@pytest.mark.parametrize("style", ["gpt", "llama"])
def test_decoder_flops_match_torchs_counter(style):
    """Every matmul of the decoder (grouped heads, gated MLP, cross-attention only where it is) as PyTorch counts
    them; the counter leaves CPU's fused attention kernel out, so the attention terms are taken off first."""
    from captioner.decoder import TextDecoder
    from captioner.flops import decoder_flops
    from tests.test_decoder import STYLES

    cfg = CaptionerConfig.from_name("tiny", n_layer=2, vocab_size=50, **STYLES[style])
    model, t, n = TextDecoder(cfg).eval(), 7, 9
    ids, memory = torch.randint(0, 50, (1, t)), torch.randn(1, n, cfg.n_embd)
    with torch.no_grad(), FlopCounterMode(display=False) as kv_counter:
        kv = model.image_kv(memory)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids, kv)
    decoder, bridge = decoder_flops(cfg, t, n)
    width = cfg.heads().n_head * cfg.heads().head_size
    attention = cfg.n_layer * 4 * t * t * width + len(cfg.cross_layers()) * 4 * t * n * width
    assert (decoder - attention, bridge) == (counter.get_total_flops(), kv_counter.get_total_flops())
