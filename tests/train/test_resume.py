"""Never lose a run: a run killed mid-epoch resumes from its last checkpoint to exactly the same weights and losses."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT

STEPS = 12  # 8 batches an epoch: the kill lands mid-epoch and the run crosses an epoch boundary


def fit_demo_config(tmp: Path, runs: Path, extra: list[str]) -> int:
    """`captioner fit --config configs/shapes.yaml` as shipped (its callbacks, its conv stem with BatchNorm), with
    a small encoder, a few steps and dropout 0.1 (a resumed run must draw the masks of the straight run); `extra`
    flags go last."""
    from tests.helpers import TINY_MODEL, TINY_SHAPES_DATA

    steps = [
        f"--trainer.max_steps={STEPS}",
        "--trainer.val_check_interval=6",
        "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.deterministic=true",
        f"--trainer.logger.init_args.save_dir={runs}",
        "--model.validation.generate_batches=1",
        "--model.config.dropout=0.1",
    ]
    cmd = [
        sys.executable,
        "-m",
        "captioner",
        "fit",
        "--config",
        str(ROOT / "configs/shapes.yaml"),
        *TINY_MODEL,
        *TINY_SHAPES_DATA,
        *steps,
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300).returncode


def package_tensors(runs: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (package,) = runs.glob("shapes/version_*/model")
    assert json.loads((package / "config.json").read_text())["dropout"] == 0.1  # the runs train with dropout
    return load_file(package / "model.safetensors")


def losses(runs: Path) -> dict[int, float]:
    out = {}
    for path in runs.glob("shapes/version_*/metrics*.csv"):
        with path.open() as rows:
            out.update({int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(rows) if r.get("train/loss")})
    return out


def last_step(runs: Path) -> int:
    (path,) = runs.glob("shapes/version_*/checkpoints/last.ckpt")
    return torch.load(path, weights_only=True)["global_step"]


def kill_at(step: int, sig: signal.Signals) -> list[str]:
    return [
        "--trainer.callbacks+=tests.train.kill_helper.KillAt",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.signal={int(sig)}",
    ]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The runs folder of the demo config trained straight through (STEPS steps, validation every 6)."""
    tmp = tmp_path_factory.mktemp("straight")
    assert fit_demo_config(tmp, tmp / "runs", []) == 0
    return tmp / "runs"


def assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = package_tensors(straight), package_tensors(resumed)
    assert any(k.endswith("running_mean") for k in a)  # the conv stem's BatchNorm is there
    assert a.keys() == b.keys()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6
    la, lb = losses(straight), losses(resumed)
    assert len(lb) >= STEPS - 1 and all(abs(la[s] - lb[s]) <= 1e-6 for s in lb)
    assert len(list(resumed.glob("shapes/version_*"))) == 1  # every resume continued in the same folder


@pytest.mark.slow
def test_the_demo_config_stopped_by_sigterm_and_resumed_exports_the_same_weights(tmp_path, straight):
    """Black box, with the shipped config's own callbacks (throughput, figures, export, ...) and its conv stem:
    nothing that measures the model may move its state, BatchNorm's running statistics included. One run is
    stopped three times and resumed each time: mid-epoch (5), at a validation (6), at the last batch of an epoch (8)."""
    runs = tmp_path / "runs"
    resume: list[str] = []
    for stop in (5, 6, 8):
        assert fit_demo_config(tmp_path, runs, [*resume, *kill_at(stop, signal.SIGTERM)]) == 0  # a clean exit
        assert last_step(runs) == stop  # PreemptionCheckpoint saved last.ckpt where it stopped
        assert not list(runs.glob("shapes/version_*/model"))  # and no package yet
        resume = ["--ckpt_path=last"]
    assert fit_demo_config(tmp_path, runs, resume) == 0
    assert_same_run(straight, runs)


def lora_flags(llama_dir: Path) -> list[str]:
    """A frozen tiny Llama with LoRA and cross-attention every 2 blocks; dropout on the adapters' inputs too."""
    return [
        f"--model.config.decoder_init_from={llama_dir}",
        "--model.config.cross_attention_every=2",
        "--data.init_args.captions.truncate=true",  # the test Llama's tokenizer is the tiny shapes BPE
        "--model.finetune.freeze_lm=true",
        "--model.finetune.lora.groups=[lm_attention, lm_mlp, cross_attention]",
        "--model.finetune.lora.r=2",
        "--model.finetune.lora.dropout=0.1",
    ]


@pytest.fixture(scope="module")
def straight_lora(tmp_path_factory, llama_dir) -> Path:
    """The runs folder of the demo config with `lora_flags`, trained straight through."""
    tmp = tmp_path_factory.mktemp("straight_lora")
    assert fit_demo_config(tmp, tmp / "runs", lora_flags(llama_dir)) == 0
    return tmp / "runs"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_straight_run(tmp_path, straight_lora, llama_dir):
    """SIGKILL at step 7 loses what followed the last checkpoint (ModelCheckpoint's last.ckpt at the validation of
    step 6); the resumed run trains steps 7.. again and ends where the straight run ended. With LoRA on a frozen
    Llama: the adapters and their optimiser state travel in the .ckpt, and the package holds the same merged weights
    as the straight run's, without LoRA names (the SIGTERM test below resumes the plain demo config)."""
    runs, flags = tmp_path / "runs", lora_flags(llama_dir)
    assert fit_demo_config(tmp_path, runs, [*flags, *kill_at(7, signal.SIGKILL)]) == -signal.SIGKILL
    assert not list(runs.glob("shapes/version_*/model"))  # it never finished
    assert last_step(runs) == 6
    assert fit_demo_config(tmp_path, runs, [*flags, "--ckpt_path=last"]) == 0
    assert_same_run(straight_lora, runs)
    assert not [k for k in package_tensors(runs) if "lora_" in k or "base_layer" in k]


def test_the_rng_goes_back_when_training_starts_after_what_a_fit_draws_before_it():
    """Lightning loads a checkpoint before the callbacks' `on_fit_start` (the feature cache's loader), the sanity
    check and `on_train_start`; the uninterrupted run drew those before its checkpoint, so they must not move the
    resumed run's dropout masks."""
    from captioner.train import connect
    from tests.helpers import tiny_module, tiny_shapes

    module = tiny_module()
    connect(module, tiny_shapes(16))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    straight, straight_python = torch.rand(4), random.random()  # what the uninterrupted run draws next
    module.on_load_checkpoint(checkpoint)
    torch.rand(3), random.random()  # what a resumed fit draws before training starts
    module.on_train_start()
    assert torch.equal(torch.rand(4), straight) and random.random() == straight_python
