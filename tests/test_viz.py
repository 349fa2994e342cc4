"""Attention maps with cross-attention in some blocks only: `layer` counts the cross-attention layers."""

import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.viz import cross_attention_maps
from tests.test_decoder import LLAMA_STYLE


def test_maps_of_a_decoder_with_fewer_cross_layers(images):
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig.from_name("tiny", n_layer=4, **LLAMA_STYLE)).eval()  # blocks 1 and 3
    tokens = [[5, 6, 7], [8]]
    last, first, mean = (cross_attention_maps(model, images[:2], tokens, 1, layer) for layer in (-1, 0, None))
    assert [m.shape for m in last] == [(3, 4, 4), (1, 4, 4)]  # tokens over the 4x4 patch grid
    assert torch.allclose(last[0].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert not torch.allclose(last[0], first[0]) and torch.allclose(mean[0], (first[0] + last[0]) / 2, atol=1e-6)
