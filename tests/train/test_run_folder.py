"""`--ckpt_path last` never harms the folder it resumes: one live run per folder, earlier metrics kept, and a resume
that fails leaves every file as it was; the training bar counts steps (issue 13)."""

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.train.run_folder import lock_folder
from tests.cli.test_errors import one_line_error
from tests.helpers import ROOT, TINY_MODEL, TINY_SHAPES_DATA


def fit_args(runs: Path, steps: int, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs/shapes.yaml"),
        *TINY_MODEL,
        *TINY_SHAPES_DATA,
        f"--trainer.max_steps={steps}",
        "--trainer.val_check_interval=4",
        "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={runs}",
        *extra,
    ]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def logged_steps(path: Path) -> set[int]:
    with path.open() as rows:
        return {int(r["step"]) for r in csv.DictReader(rows) if r.get("train/loss")}


@pytest.fixture
def run(tmp_path) -> Path:
    runs = tmp_path / "runs"
    assert main(fit_args(runs, 4)) == 0
    return runs


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_a_resume_that_fails_leaves_the_folder_as_it_was(run, capsys):
    folder = run / "shapes/version_0"
    before = snapshot(folder)
    # another config than the run's: the tensors that differ are named, in one line
    assert main([*fit_args(run, 8, "--model.config.n_embd=64"), "--ckpt_path=last"]) == 2
    assert "does not fit the model this config builds (model.encoder.proj.weight" in one_line_error(capsys)
    assert snapshot(folder) == before  # metrics.csv and config.yaml too
    # a checkpoint cut short by a crash
    last = folder / "checkpoints/last.ckpt"
    good = last.read_bytes()
    last.write_bytes(good[:5000])
    assert main([*fit_args(run, 8), "--ckpt_path=last"]) == 2
    assert "is not a checkpoint that loads" in one_line_error(capsys)
    last.write_bytes(good)
    assert snapshot(folder) == before


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_a_live_run_folder_is_not_resumed_twice_and_earlier_metrics_are_kept(run, capsys):
    folder = run / "shapes/version_0"
    before = snapshot(folder)
    held = lock_folder(folder)  # what a live `captioner fit` logging there holds
    try:
        assert main([*fit_args(run, 8), "--ckpt_path=last"]) == 2
        assert "is being written by another training run that is still alive" in one_line_error(capsys)
        assert snapshot(folder) == before
    finally:
        import os

        os.close(held)
    shutil.rmtree(folder / "model")  # the resumed run exports its own package there
    assert main([*fit_args(run, 8), "--ckpt_path=last"]) == 0  # the folder is free again: it resumes
    assert logged_steps(folder / "metrics.part0.csv") == {0, 1, 2, 3}  # the first run's rows, kept
    assert logged_steps(folder / "metrics.csv") == {4, 5, 6, 7}
    assert len(list(run.glob("shapes/version_*"))) == 1


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_the_training_bar_counts_steps_of_max_steps_also_after_a_resume(tmp_path):
    from captioner.train.progress import StepProgressBar

    seen: list[tuple[float, float | None, str]] = []

    def record(self, trainer, *args) -> None:
        original(self, trainer, *args)
        task = self.progress.tasks[self.train_progress_bar_id]
        seen.append((task.completed, task.total, task.description.strip()))

    original = StepProgressBar.on_train_batch_end
    StepProgressBar.on_train_batch_end = record
    try:
        runs = tmp_path / "runs"
        assert main(fit_args(runs, 4)) == 0
        shutil.rmtree(runs / "shapes/version_0/model")
        assert main([*fit_args(runs, 10), "--ckpt_path=last"]) == 0
    finally:
        StepProgressBar.on_train_batch_end = original
    assert [s[:2] for s in seen] == [(n, 4) for n in range(1, 5)] + [(n, 10) for n in range(5, 11)]
    assert seen[-1][2] == "Epoch 1"  # 8 batches an epoch; not "Epoch 1/-2"


def test_the_model_summary_counts_flops(tiny_config):
    from lightning.pytorch.utilities.model_summary import summarize

    from tests.helpers import built, tiny_module

    assert summarize(built(tiny_module(tiny_config))).total_flops > 0
