"""See a run (issue 19): TensorBoard beside the CSV, validation figures as images, throughput, plots without a
server."""

import csv

import lightning as L
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from captioner.cli import main
from captioner.config import CaptionerConfig
from captioner.flops import step_flops
from captioner.train import TrainingThroughput
from tests.cli.test_errors import one_line_error
from tests.helpers import TINY_MODEL, TINY_SHAPES_DATA, fit, fit_shapes_package, tiny_module, tiny_shapes


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_fit_logs_scalars_and_figures_to_tensorboard_and_plots_the_run(tmp_path, capsys):
    steps = ["--trainer.max_steps=8", "--trainer.val_check_interval=4", "--trainer.log_every_n_steps=2"]
    package = fit_shapes_package(tmp_path / "runs", [*TINY_MODEL, *TINY_SHAPES_DATA, *steps])
    run = package.parent
    assert f"tensorboard --logdir {run.parent}" in capsys.readouterr().err
    (events,) = run.glob("events.out.tfevents.*")  # beside metrics.csv: one folder for the run
    assert (run / "metrics.csv").is_file()
    tb = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    tb.Reload()
    assert {"train/loss", "val/loss", "lr"} <= set(tb.Tags()["scalars"])
    images = set(tb.Tags()["images"])
    assert {"val/captions", *(f"val/attention/{i}" for i in range(8))} <= images
    assert [e.step for e in tb.Images("val/captions")] == [4, 8]
    shown = tb.Images("val/captions")[-1]
    assert shown.width >= 4 * 160 and shown.height >= 2 * 160  # 8 images in rows of 4, with their captions
    for step in (4, 8):
        assert len(list((run / f"figures/step_{step}").glob("*.png"))) == 9
    assert main(["plot", str(run)]) == 0
    plots = {p.name for p in (run / "plots").iterdir()}
    assert {"loss.png", "lr.png", "quality.png", "curves.png"} <= plots
    capsys.readouterr()
    assert main(["plot", str(run)]) == 2  # drawn already: never replaced without asking
    assert "--overwrite" in one_line_error(capsys)


def test_throughput_is_logged_with_the_projects_flops(tmp_path):
    config = CaptionerConfig.from_name("tiny")
    module = tiny_module(config)
    data = tiny_shapes(48)
    throughput = TrainingThroughput(window_size=2)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run")
    trainer = L.Trainer(
        max_steps=6,
        limit_val_batches=0,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[throughput],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    fit(trainer, module, data)
    rows = list(csv.DictReader((tmp_path / "run/version_0/metrics.csv").read_text().splitlines()))
    images_s = [float(r["train/device/samples_per_sec"]) for r in rows if r.get("train/device/samples_per_sec")]
    flops_s = [float(r["train/device/flops_per_sec"]) for r in rows if r.get("train/device/flops_per_sec")]
    assert images_s and all(v > 0 for v in images_s) and flops_s and all(v > 0 for v in flops_s)
    model = module.model
    image_tokens = model.encode(data.datasets["train"][0]["image"][None]).size(1)

    def flops(T: int) -> float:
        return step_flops(model, image_tokens, model.encoder.num_prefix_tokens, T).training(8)

    assert flops(2) <= module.flops_per_batch <= flops(data.max_length)  # the last batch's, by its caption length
