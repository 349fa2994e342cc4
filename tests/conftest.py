"""Shared fixtures: a tiny config, a tokenizer trained on shapes captions, a tiny model."""

from __future__ import annotations

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.data.shapes import captions, scene_objects
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer


@pytest.fixture(scope="session")
def tokenizer() -> CaptionTokenizer:
    texts = [c for i in range(300) for c in captions(scene_objects("train", i))]
    return CaptionTokenizer.train(texts, vocab_size=300)


@pytest.fixture
def tiny_config(tokenizer: CaptionTokenizer) -> CaptionerConfig:
    return CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size)


@pytest.fixture
def tiny_model(tiny_config: CaptionerConfig) -> Captioner:
    torch.manual_seed(0)
    return Captioner(tiny_config)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 32, 32)  # (B, 3, H, W) at the tiny preset's size
