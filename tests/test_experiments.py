"""The experiment scripts stay runnable: the demo comparison runs both configs end to end (tiny settings)."""

import json

import pytest

from experiments.demo_speed import main as demo_speed
from tests.helpers import TINY_MODEL, TINY_SHAPES_DATA


def test_demo_speed_answers_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        demo_speed(["--help"])
    assert exit_.value.code == 0 and "side by side" in capsys.readouterr().out


def test_demo_speed_refuses_an_existing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        demo_speed(["--out", str(tmp_path)])
    assert exit_.value.code == 2 and f"--out {tmp_path} exists" in capsys.readouterr().err


@pytest.mark.slow  # a fresh `captioner demo` process: about 10 s
def test_demo_speed_reports_a_failed_demo_in_one_line(tmp_path, capsys):
    assert demo_speed(["--out", str(tmp_path / "c"), "--", "--trainer.no_such_option=1"]) == 2
    err = capsys.readouterr().err
    assert (
        "demo_speed: error: `captioner demo --config experiments/shapes_previous.yaml` exited with 2" in err
        and "Traceback" not in err
    )


@pytest.mark.slow  # two `captioner demo` processes (about 40 s)
def test_demo_speed_runs_both_configs_and_prints_the_ratio(tmp_path, capsys):
    tiny = [*TINY_MODEL, *TINY_SHAPES_DATA, "--trainer.max_steps=2", "--trainer.val_check_interval=2"]
    out = tmp_path / "compare"
    assert demo_speed(["--out", str(out), "--test-count", "4", "--order", "new,old", "--", *tiny]) == 0
    summary = json.loads((out / "demo_speed.json").read_text())
    assert summary["order"] == "new,old" and "cores" in summary["machine"]
    for label, config in (("old", "experiments/shapes_previous.yaml"), ("new", "configs/shapes.yaml")):
        run = summary[label]
        assert run["config"] == config and run["steps"] == 2 and run["test"]["count"] == 4
        assert {"blind_control", "novel", "wall_seconds", "train_seconds"} <= set(run)
    ratio = summary["old"]["wall_seconds"] / summary["new"]["wall_seconds"]
    assert summary["old_over_new_wall"] == round(ratio, 2)
    assert f"wall time old / new: {ratio:.2f}x" in capsys.readouterr().out


@pytest.mark.slow  # a tiny random Llama and two 2-step runs with their test captions (about 20 s)
def test_the_policies_experiment_trains_each_policy_from_a_random_llama(tmp_path, capsys):
    from experiments.policies import main as policies

    tiny = [*TINY_MODEL, *TINY_SHAPES_DATA, "--data.init_args.captions.truncate=true"]
    args = ["--runs", str(tmp_path), "--policies", "flamingo,lora", "--steps", "2", "--layers", "2", "--width", "32"]
    assert policies([*args, "--test-count", "4", *tiny]) == 0
    out = capsys.readouterr().out
    assert "flamingo        2" in out and "lora            2" in out
    assert (tmp_path / "llama/config.json").is_file() and len(list(tmp_path.glob("*/version_0/model"))) == 2
