"""Shared fixtures: a tiny config, a tokenizer trained on shapes captions, a tiny model, a tiny trained package."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture
def shapes_folder(tmp_path):
    """An imagefolder of 12 shapes scenes (PNGs + metadata.jsonl with 4 captions each)."""
    from captioner.data.shapes import write_imagefolder

    return write_imagefolder(tmp_path / "folder", "train", 12)


ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "--model.config.encoder_img_size=32",
    "--model.config.encoder_kwargs={embed_dim: 32, depth: 1, num_heads: 2}",
    "--model.config.n_layer=1",
    "--model.config.n_embd=32",
    "--model.config.n_head=2",
]


def fit_shapes_package(runs: Path, overrides: list[str]) -> Path:
    """`captioner fit --config configs/shapes.yaml` with overrides, logging under `runs`; the exported package."""
    from captioner.cli import main

    config = str(ROOT / "configs/shapes.yaml")
    assert main(["fit", "--config", config, *overrides, f"--trainer.logger.init_args.save_dir={runs}"]) == 0
    (package,) = runs.glob("shapes/version_*/model")
    return package


@pytest.fixture(scope="session")
def trained_package(tmp_path_factory) -> Path:
    """configs/shapes.yaml with a tiny model for 4 steps; the exported package."""
    tiny_data = [
        "--data.init_args.train_size=64",
        "--data.init_args.val_size=16",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        "--data.init_args.tokenizer_scenes=200",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=4",
    ]
    return fit_shapes_package(tmp_path_factory.mktemp("runs"), [*TINY_MODEL, *tiny_data])
