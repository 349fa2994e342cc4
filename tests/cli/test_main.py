"""End to end through the `captioner` command, in-process: fit from configs/shapes.yaml, caption, evaluate."""

import json
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.shapes.scenes import write_imagefolder
from captioner.train.cli import trainer_cli
from tests.helpers import ROOT


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        trainer_cli(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    assert "model:" in capsys.readouterr().out


def test_fit_exports_a_package_with_checkpoints_and_logs(trained_package: Path):
    assert {p.name for p in trained_package.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    info = json.loads((trained_package / "training.json").read_text())
    assert info["steps"] == 4 and info["data"]["holdout_pairs"] == [["red", "triangle"], ["blue", "cross"]]
    # how it was made: the objective, no start package, configs/shapes.yaml's optimiser, the resolved config
    assert info["objective"] == {"name": "cross_entropy"} and info["started_from"] is None
    assert info["optimizer"]["lr"] == 0.002 and info["optimizer"]["min_lr_ratio"] == 0.0
    assert info["config"] == json.loads((trained_package / "config.json").read_text())
    run = trained_package.parent
    assert list(run.glob("checkpoints/*.ckpt")) and (run / "metrics.csv").is_file()
    assert (run / "samples.jsonl").is_file()


def test_caption_loads_the_package(trained_package, tmp_path, capsys):
    write_imagefolder(tmp_path / "imgs", "test", 3)
    out = tmp_path / "captions.jsonl"
    assert main(["caption", str(trained_package), str(tmp_path / "imgs" / "images"), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["caption"], str) for r in rows)
    assert main(["caption", str(trained_package), str(tmp_path / "imgs" / "images"), "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_caption_beam_n_best(trained_package, tmp_path):
    write_imagefolder(tmp_path / "imgs", "test", 2)
    out = tmp_path / "nbest.jsonl"
    args = ["--num-beams", "3", "--num-return-sequences", "2", "--output", str(out)]
    assert main(["caption", str(trained_package), str(tmp_path / "imgs" / "images"), *args]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["n_best"]) == 2 and r["n_best"][0]["score"] >= r["n_best"][1]["score"] for r in rows)
    assert all(r["caption"] == r["n_best"][0]["caption"] for r in rows)


def test_caption_refuses_bad_decoding_options(trained_package, tmp_path, capsys):
    write_imagefolder(tmp_path / "imgs", "test", 1)
    assert (
        main(["caption", str(trained_package), str(tmp_path / "imgs" / "images"), "--num-return-sequences", "2"]) == 2
    )
    assert "--num-return-sequences 2 needs --num-beams >= that" in capsys.readouterr().err  # the flags, not fields


def test_caption_missing_input_gets_an_error_row(trained_package, capsys):
    assert main(["caption", str(trained_package), "does/not/exist.png", "--workers", "0"]) == 1
    assert "does/not/exist.png: file not found" in capsys.readouterr().out


@pytest.mark.slow  # two Java scorings (~14 s); test_evaluate_shapes_report_and_imagefolder covers evaluate fast
def test_evaluate_writes_predictions(trained_package, tmp_path, capsys):
    out = tmp_path / "predictions.jsonl"
    assert main(["evaluate", str(trained_package), "--count", "6", "--output", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["count"] == 6 and 0.0 <= metrics["exact_match"] <= 1.0
    row = json.loads(out.read_text().splitlines()[0])
    assert set(row) - {"truncated"} == {"id", "caption", "references", "objects"} and row["id"] == "test/0"
    assert main(["evaluate", str(trained_package), "--split", "novel", "--count", "4", "--blind"]) == 0


@pytest.mark.parametrize("command", ["caption", "evaluate", "demo", "shapes", "shards", "prepare-coco", "fit"])
def test_every_command_has_help(command, capsys):
    try:
        code = main([command, "--help"])
    except SystemExit as exit_:  # LightningCLI's --help exits itself
        code = exit_.code
    assert code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_demo_trains_evaluates_and_ends_with_the_plots(tmp_path, capsys):
    from tests.helpers import TINY_MODEL, TINY_SHAPES_DATA

    args = [
        "demo",
        "--config",
        str(ROOT / "configs/shapes.yaml"),
        "--test-count",
        "4",
        *TINY_MODEL,
        *TINY_SHAPES_DATA,
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=4",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    assert main(args) == 0
    run = tmp_path / "shapes/version_0"
    assert {"curves.png", "loss.png"} <= {p.name for p in (run / "plots").iterdir()}
    out = capsys.readouterr().out
    assert f"training curves: {run / 'plots'}" in out and "tensorboard --logdir" in out
    assert json.loads((run / "demo_report.json").read_text())["test"]["count"] == 4
