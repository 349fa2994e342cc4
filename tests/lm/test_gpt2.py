"""GPT-2 as the decoder's start: a random GPT-2 saved locally by transformers."""

from dataclasses import replace

import torch

from captioner.config import CaptionerConfig
from captioner.lm import lm_config
from captioner.model import Captioner


def test_gated_gpt2_decoder_equals_gpt2_then_opens(gpt2_dir, images):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    config = lm_config(CaptionerConfig.from_name("tiny", decoder_init_from=str(gpt2_dir)))
    assert (config.n_layer, config.n_embd, config.cross_gate, config.gelu_approximate) == (2, 64, True, "tanh")
    # building from the unresolved config resolves it: the decoder is sized from that GPT-2
    model = Captioner(CaptionerConfig.from_name("tiny", decoder_init_from=str(gpt2_dir))).eval()
    assert replace(model.config, preprocessing={}) == config
    ids = torch.randint(0, config.vocab_size, (3, 12))
    with torch.no_grad():
        assert (model(images, ids) - hf(ids).logits).abs().max() < 1e-4
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model.loss(images, ids, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert all(float(block.cross_gate.detach().abs()) > 0 for block in model.decoder.h)
    with torch.no_grad():
        assert (model(images, ids) - hf(ids).logits).abs().max() > 1e-3
