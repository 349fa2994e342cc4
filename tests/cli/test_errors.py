"""A user's mistake is one line, `captioner: error: ...`, exit code 2; `--debug` shows the traceback."""

import json
import shutil

import pytest

from captioner.cli import main
from tests.helpers import ROOT


def one_line_error(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("captioner: error:"), err
    return err[0]


def broken_package(trained_package, tmp_path, name, text):  # noqa: ANN001, ANN201
    copy = tmp_path / "pkg"
    shutil.copytree(trained_package, copy)
    if text is None:
        (copy / name).unlink()
    else:
        (copy / name).write_text(text)
    return copy


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("config.json", "{not json", "not valid JSON"),
        ("config.json", json.dumps({"n_layer": "two"}), "'n_layer' is 'two'; expected a int"),
        ("tokenizer.json", None, "tokenizer.json is missing"),
        ("training.json", "[1, 2]", "training.json: not the training.json"),
    ],
    ids=["config-not-json", "config-wrong-type", "no-tokenizer", "bad-training-json"],
)
def test_a_broken_package_is_one_line(name, text, said, trained_package, tmp_path, capsys):
    package = broken_package(trained_package, tmp_path, name, text)
    assert main(["evaluate", str(package), "--count", "2"]) == 2
    assert said in one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "said"),
    [(["--list", "nope.txt"], "nope.txt"), (["--device", "cuda:7"], "--device cuda:7")],
    ids=["missing-list", "no-such-gpu"],
)
def test_other_mistakes_of_caption_are_one_line(args, said, trained_package, tmp_path, capsys):
    import torch

    from captioner.shapes import make_scene

    if args[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    image = tmp_path / "a.png"
    make_scene("test", 0).image.save(image)
    assert main(["caption", str(trained_package), str(image), *args]) == 2
    assert said in one_line_error(capsys)


def test_a_data_error_in_fit_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    args = ["fit", "--config", str(ROOT / "configs/pairs.yaml"), f"--data.init_args.train={tmp_path / 'none'}"]
    assert main(args) == 2
    assert "no metadata.jsonl or metadata.csv" in one_line_error(capsys)
    with pytest.raises(ValueError, match="no metadata.jsonl"):
        main([*args, "--debug"])


@pytest.mark.parametrize(
    "args",
    [
        ["shapes", "out", "--count", "-5"],
        ["shards", "s/%05d.tar", "--input", "x", "--max-count", "0"],
        ["caption", "pkg", "a.png", "--batch-size", "0"],
    ],  # fmt: skip
    ids=["shapes-count", "shards-max-count", "caption-batch-size"],
)
def test_counts_below_one_are_refused(args, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert "is not a whole number >= 1" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_attention_maps_of_images_named_alike_do_not_overwrite(trained_package, tmp_path):
    from captioner.shapes import make_scene

    for i, sub in enumerate(("a", "b")):
        (tmp_path / sub).mkdir()
        make_scene("test", i).image.save(tmp_path / sub / "x.png")
    maps = tmp_path / "maps"
    args = ["caption", str(trained_package), str(tmp_path / "a"), str(tmp_path / "b"), "--attention-maps", str(maps)]
    assert main([*args, "--workers", "0"]) == 0
    assert len(list(maps.glob("x.*.attention.png"))) == 2


def test_packages_follow_the_umask(tiny_model, tokenizer, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        package = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer)
    finally:
        os.umask(old)
    assert package.stat().st_mode & 0o777 == 0o755
    assert (package / "model.safetensors").stat().st_mode & 0o777 == 0o644
