"""The small packages the ONNX tests export: random tiny captioners with peaked, image-dependent outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer
from tests.hf.test_export import BLOCKS

# GPT-style, and every other block option on a Llama-style decoder (RoPE, RMSNorm, grouped heads, a cross MLP,
# q/k norm, soft-capping, post norms, a block without RoPE); each export takes seconds
STYLES = {"gpt": {}, "others": BLOCKS["others"]}


def tiny_package(path: Path, tokenizer: CaptionTokenizer, style: str) -> Path:
    """A random tiny captioner of `style` with its cross-attention gates open (so the image matters), its norms
    off 1 and its matrices scaled up (peaked outputs, as export-hf's test), saved."""
    torch.manual_seed(0)
    config = CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, n_layer=2, **STYLES[style])
    model = Captioner(config).eval()
    with torch.no_grad():
        for name, p in model.decoder.named_parameters():
            p.copy_(torch.full_like(p, 0.7) if "gate" in name else p * 4 if p.ndim > 1 else p + torch.rand_like(p))
    return model.save_pretrained(path, tokenizer)
