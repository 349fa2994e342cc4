"""What tests share besides fixtures: the repository root, the tiny-model flags, and one way to train a package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "--model.config.encoder_img_size=32",
    "--model.config.encoder_kwargs={embed_dim: 32, depth: 1, num_heads: 2}",
    "--model.config.n_layer=1",
    "--model.config.n_embd=32",
    "--model.config.n_head=2",
]
TINY_SHAPES_DATA = [
    "--data.init_args.train_size=64",
    "--data.init_args.val_size=16",
    "--data.init_args.batch_size=8",
    "--data.init_args.num_workers=0",
    "--data.init_args.tokenizer_scenes=200",
]


def fit_shapes_package(runs: Path, overrides: list[str]) -> Path:
    """`captioner fit --config configs/shapes.yaml` with overrides, logging under `runs`; the exported package."""
    from captioner.cli import main

    config = str(ROOT / "configs/shapes.yaml")
    assert main(["fit", "--config", config, *overrides, f"--trainer.logger.init_args.save_dir={runs}"]) == 0
    (package,) = runs.glob("shapes/version_*/model")
    return package


def fit(trainer, module, datamodule) -> None:  # noqa: ANN001
    """`trainer.fit` from Python, as the CLI does it: the module and the data connected first."""
    from captioner.train import connect

    connect(module, datamodule, trainer)
    trainer.fit(module, datamodule)
