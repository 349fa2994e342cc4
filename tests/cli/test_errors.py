"""A user's mistake is one line, `captioner: error: ...`, exit code 2; `--debug` shows the traceback."""

import json
import shutil

import pytest

from captioner.cli import main
from tests.helpers import ROOT, TINY_MODEL


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("captioner: error:"), err
    return err[0]


def broken_package(trained_package, tmp_path, name, text):
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
    ("args", "said"),
    [
        (["shapes", "out", "--count", "-5"], "is not a whole number >= 1"),
        (["shards", "s/%05d.tar", "--input", "x", "--max-count", "0"], "is not a whole number >= 1"),
        (["caption", "pkg", "a.png", "--batch-size", "0"], "--batch-size 0: must be between 1 and"),
        (["evaluate", "pkg", "--batch-size", "0"], "--batch-size 0: must be between 1 and"),  # the same option
    ],
    ids=["shapes-count", "shards-max-count", "caption-batch-size", "evaluate-batch-size"],
)
def test_counts_below_one_are_refused(args, said, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert said in one_line_error(capsys)
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


@pytest.mark.parametrize("where", ["report", "output"])
def test_evaluate_refuses_an_unwritable_place_before_scoring(where, trained_package, tmp_path, capsys, monkeypatch):
    import captioner.shapes.evaluate

    def scored(*_, **__):
        raise AssertionError("scored before the output was checked")

    monkeypatch.setattr(captioner.shapes.evaluate, "evaluate_shapes", scored)
    (tmp_path / "a_file").write_text("")
    place = tmp_path / "a_file" / "x.json"  # its folder is a file: nothing can be written there
    assert main(["evaluate", str(trained_package), "--count", "2", f"--{where}", str(place)]) == 2
    assert f"--{where} {place}: {place.parent} is a file, not a folder" in one_line_error(capsys)


def test_caption_refuses_an_attention_maps_folder_that_cannot_be_made(trained_package, tmp_path, capsys):
    from captioner.shapes import make_scene

    make_scene("test", 0).image.save(tmp_path / "a.png")
    (tmp_path / "maps").write_text("")  # a file where the folder should be
    args = ["caption", str(trained_package), str(tmp_path / "a.png"), "--attention-maps", str(tmp_path / "maps")]
    assert main(args) == 2
    assert "--attention-maps" in one_line_error(capsys) and (tmp_path / "maps").read_text() == ""


def test_a_gpt2_whose_bin_needs_unpickling_is_refused_with_what_to_do(gpt2_dir, tmp_path, capsys):
    import os

    import torch
    from safetensors.torch import load_file

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    evil = tmp_path / "gpt2"
    shutil.copytree(gpt2_dir, evil)
    state = load_file(evil / "model.safetensors")
    (evil / "model.safetensors").unlink()
    torch.save({**state, "x": Payload()}, evil / "pytorch_model.bin")
    args = ["fit", "--config", str(ROOT / "configs/shapes.yaml"), f"--model.config.decoder_init_from={evil}"]
    assert main(args) == 2
    said = one_line_error(capsys)
    assert "need arbitrary unpickling" in said and "save_pretrained" in said and "--weights_only" not in said
    assert not (tmp_path / "ran").exists()


@pytest.mark.filterwarnings("ignore:skipped an example that could not be read")  # collate's own, as intended
@pytest.mark.parametrize("workers", ["0", "1"])  # in a worker, torch re-raises it with the worker's traceback
def test_a_validation_split_whose_images_all_fail_stops_with_a_message(workers, tmp_path, capsys):
    from captioner.shapes import write_imagefolder

    train = write_imagefolder(tmp_path / "train", "train", 16)
    val = write_imagefolder(tmp_path / "val", "val", 3)  # below the 100 examples the failure rate once needed
    for image in (val / "images").iterdir():
        image.write_bytes(b"not an image")
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/pairs.yaml"),
        *TINY_MODEL,
        f"--data.init_args.train={train}",
        f"--data.init_args.val={val}",
        f"--data.init_args.num_workers={workers}",
        "--data.init_args.batch_size=4",
        "--model.tokenizer.vocab_size=300",
        "--data.init_args.captions.truncate=true",
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]
    assert main(args) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]  # after the run's "run folder ..." line
    assert said.startswith("captioner: error: 3 of 3 examples could not be read") and "val_000000.png" in said
    assert "ModelCheckpoint" not in said


def test_a_training_set_smaller_than_a_batch_is_refused(shapes_folder, tmp_path, capsys):
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/pairs.yaml"),
        *TINY_MODEL,
        f"--data.init_args.train={shapes_folder}",
        "--data.init_args.split.val_fraction=0.25",
        "--data.init_args.num_workers=0",
        "--model.tokenizer.vocab_size=300",
        "--data.init_args.captions.truncate=true",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]
    assert main(args) == 2  # 9 training images, batch_size 32: the dropped last batch was the whole epoch
    assert "9 training examples make no whole batch of data.init_args.batch_size=32" in one_line_error(capsys)
    assert not list((tmp_path / "runs").glob("*/version_*/model"))
