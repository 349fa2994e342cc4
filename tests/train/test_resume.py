"""Never lose a run: a run killed mid-epoch resumes from its last checkpoint to exactly the same weights and losses."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import ROOT, TINY_OVERRIDE

STEPS = 12  # 8 batches an epoch: the kill lands mid-epoch and the run crosses an epoch boundary


def run_fit(tmp: Path, runs: Path, kill: tuple[int, int] | None = None, resume: bool = False) -> int:
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"every_n_train_steps": 2, "save_last": True},
        },
        {"class_path": "captioner.train.PreemptionCheckpoint"},
    ]
    if kill:
        callbacks.append(
            {"class_path": "tests.train.kill_helper.KillAt", "init_args": {"step": kill[0], "signal": int(kill[1])}}
        )
    override = {
        "trainer": {
            "max_steps": STEPS,
            "limit_val_batches": 0,
            "log_every_n_steps": 1,
            "deterministic": True,
            "enable_progress_bar": False,
            "callbacks": callbacks,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(runs), "name": "shapes", "flush_logs_every_n_steps": 1},
            },
        },
        "model": {
            **TINY_OVERRIDE["model"],
        },
        "data": TINY_OVERRIDE["data"],
    }
    path = tmp / f"override_{len(list(tmp.glob('override_*')))}.yaml"
    path.write_text(yaml.safe_dump(override))
    cmd = [
        sys.executable,
        "-m",
        "captioner",
        "fit",
        "--config",
        str(ROOT / "configs/shapes.yaml"),
        "--config",
        str(path),
    ]
    if resume:
        cmd.append("--ckpt_path=last")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300).returncode


def weights(runs: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(next(runs.glob("shapes/version_*/checkpoints/last.ckpt")), weights_only=True)
    assert ckpt["global_step"] == STEPS
    return ckpt["state_dict"]


def losses(runs: Path) -> dict[int, float]:
    out = {}
    for path in runs.glob("shapes/version_*/metrics*.csv"):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                out[int(row["step"])] = float(row["train/loss"])
    return out


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_straight_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_fit(tmp_path, straight) == 0
    assert run_fit(tmp_path, killed, kill=(7, signal.SIGKILL)) == -signal.SIGKILL
    assert not list(killed.glob("shapes/version_*/model"))  # it never finished
    assert run_fit(tmp_path, killed, resume=True) == 0
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
    la, lb = losses(straight), losses(killed)
    assert len(lb) >= STEPS - 1 and all(abs(la[s] - lb[s]) <= 1e-6 for s in lb)
    assert len(list(killed.glob("shapes/version_*"))) == 1  # the resumed run continued in the same folder


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    runs = tmp_path / "runs"
    assert run_fit(tmp_path, runs, kill=(3, signal.SIGTERM)) == 0
    ckpt = torch.load(next(runs.glob("shapes/version_*/checkpoints/last.ckpt")), weights_only=True)
    assert 3 <= ckpt["global_step"] < STEPS
    assert run_fit(tmp_path, runs, resume=True) == 0
    assert weights(runs)  # finished at STEPS from the preemption checkpoint


def fit_demo_config(tmp: Path, runs: Path, extra: list[str]) -> int:
    """`captioner fit --config configs/shapes.yaml` as shipped (its callbacks, its conv stem with BatchNorm), with
    a small encoder and a few steps; `extra` flags go last."""
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
    return load_file(package / "model.safetensors")


@pytest.fixture(scope="module")
def demo_config_straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("straight")
    assert fit_demo_config(tmp, tmp / "runs", []) == 0
    return package_tensors(tmp / "runs")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [5, 6, 8])  # mid-epoch; right after a validation; the last batch of an epoch
def test_the_demo_config_stopped_by_sigterm_and_resumed_exports_the_same_weights(tmp_path, demo_config_straight, stop):
    """Black box, with the shipped config's own callbacks (throughput, figures, export, ...) and its conv stem:
    nothing that measures the model may move its state, BatchNorm's running statistics included."""
    runs = tmp_path / "runs"
    kill = [
        "--trainer.callbacks+=tests.train.kill_helper.KillAt",
        f"--trainer.callbacks.step={stop}",
        f"--trainer.callbacks.signal={int(signal.SIGTERM)}",
    ]
    assert fit_demo_config(tmp_path, runs, kill) == 0  # SIGTERM: last.ckpt saved, a clean exit, no package
    assert not list(runs.glob("shapes/version_*/model"))
    assert fit_demo_config(tmp_path, runs, ["--ckpt_path=last"]) == 0
    a, b = demo_config_straight, package_tensors(runs)
    assert any(k.endswith("running_mean") for k in a)  # the conv stem's BatchNorm is there
    assert a.keys() == b.keys()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6
