"""Shared fixtures: a tokenizer trained on shapes captions, a tiny config and model, tiny trained packages."""

from __future__ import annotations

import os
from pathlib import Path

# no test reaches the Hugging Face Hub: huggingface_hub reads this when it is first imported (the tests' Hub
# downloads come from caches the tests lay out; see tests/test_hub.py)
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.shapes import captions, scene_objects
from captioner.tokenizer import CaptionTokenizer
from tests.helpers import TINY_MODEL, TINY_SHAPES_DATA, fit_shapes_package


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI every path runs: the Java scorer tests (METEOR, the PTB tokenizer) skip where Java is missing, which
    would keep CI green without them, so with CI=true a missing Java fails the run instead (.ci/run installs it)."""
    from captioner.metrics import java_available

    if os.environ.get("CI", "").lower() in ("true", "1") and not java_available():
        raise pytest.UsageError(
            "CI is set but no `java` is on PATH: the Java scorer tests would be skipped; install a Java runtime "
            "(Debian: apt install default-jre-headless; .ci/run does it as root) or unset CI for a local run"
        )


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


@pytest.fixture
def shapes_folder(tmp_path):
    """An imagefolder of 12 shapes scenes (PNGs + metadata.jsonl with 4 captions each)."""
    from captioner.shapes import write_imagefolder

    return write_imagefolder(tmp_path / "folder", "train", 12)


@pytest.fixture(scope="session")
def trained_package(tmp_path_factory) -> Path:
    """configs/shapes.yaml with a tiny model for 4 steps; the exported package (about 5 s)."""
    steps = ["--trainer.max_steps=4", "--trainer.val_check_interval=4"]
    return fit_shapes_package(tmp_path_factory.mktemp("runs"), [*TINY_MODEL, *TINY_SHAPES_DATA, *steps])


@pytest.fixture(scope="session")
def talking_package(tmp_path_factory) -> Path:
    """A tiny model trained long enough (150 steps, about a minute) to say words, for the pages' browser tests
    (the served page's and the exported page's share it)."""
    steps = ["--trainer.max_steps=150", "--trainer.val_check_interval=150", "--data.init_args.train_size=4000"]
    return fit_shapes_package(tmp_path_factory.mktemp("runs"), [*TINY_MODEL, *TINY_SHAPES_DATA, *steps])


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer):
    """A GPT-2 with random weights and a fast tokenizer, saved with save_pretrained (what the hub would hold)."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=tokenizer.vocab_size, n_positions=64, bos_token_id=1)
    cfg.eos_token_id = 2
    GPT2LMHeadModel(cfg).save_pretrained(path)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer, bos_token="<bos>", eos_token="<eos>")
    hf_tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama (grouped-query attention, untied head) and a fast tokenizer, saved with save_pretrained."""
    from transformers import PreTrainedTokenizerFast

    from tests.lm.checkpoints import save_lm

    path = save_lm(tmp_path_factory.mktemp("llama"), "llama", tokenizer.vocab_size)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer, bos_token="<bos>", eos_token="<eos>")
    hf_tok.save_pretrained(path)
    return path
