"""A Hub repo id wherever a package is taken, through huggingface_hub's own download code and an offline cache."""

import json
import shutil

import pytest
import torch

from captioner.cli import main
from captioner.hub import is_repo_id, locate_package, resolve_package
from captioner.model import Captioner
from captioner.package import Origin
from captioner.shapes.scenes import make_scene
from tests.helpers import hub_cache


@pytest.fixture
def hub(tmp_path, trained_package, monkeypatch):
    """An offline Hugging Face cache holding the tiny package as `acme/tiny-shapes` (main and tag v1)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    commit = hub_cache(cache, "acme/tiny-shapes", trained_package, refs=("main", "v1"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # for the commands run as subprocesses
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache, commit


def test_repo_ids_and_folders_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("acme/tiny-shapes") and is_repo_id("gpt2")
    assert not is_repo_id("runs/shapes/version_0/model") and not is_repo_id("../model") and not is_repo_id("a b/c")
    (tmp_path / "acme" / "here").mkdir(parents=True)
    assert not is_repo_id("acme/here")  # an existing folder wins
    assert resolve_package("acme/here").resolve() == tmp_path / "acme" / "here"
    with pytest.raises(ValueError, match="acme/here is a local folder"):
        resolve_package("acme/here", revision="v1")
    with pytest.raises(ValueError, match="neither a folder here nor a Hub repo id"):
        resolve_package("runs/a/model", revision="v1")


def test_from_pretrained_by_repo_id_loads_the_same_model(hub, trained_package):
    cache, commit = hub
    model, tok = Captioner.from_pretrained("acme/tiny-shapes")
    local, _ = Captioner.from_pretrained(trained_package)
    for (name, a), (_, b) in zip(model.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert tok.vocab_size == model.config.vocab_size
    # the tag, the commit and the @revision form name the same snapshot
    for name, revision in (("acme/tiny-shapes", "v1"), ("acme/tiny-shapes", commit), ("acme/tiny-shapes@v1", None)):
        folder, origin = locate_package(name, revision)
        assert folder == cache / "models--acme--tiny-shapes" / "snapshots" / commit
        assert origin == Origin(repo_id="acme/tiny-shapes", revision=revision or "v1", commit=commit)
    assert locate_package("acme/tiny-shapes").origin.revision == "main"
    assert locate_package(trained_package).origin == Origin(path=str(trained_package.resolve()))


def test_caption_takes_a_repo_id(hub, trained_package, tmp_path):
    image = tmp_path / "scene.png"
    make_scene("test", 3).image.save(image)
    rows = {}
    for name in (str(trained_package), "acme/tiny-shapes"):
        out = tmp_path / f"{name.replace('/', '_')}.jsonl"
        assert main(["caption", name, str(image), "-o", str(out), "--workers", "0"]) == 0
        rows[name] = json.loads(out.read_text())["caption"]
    assert rows["acme/tiny-shapes"] == rows[str(trained_package)]


@pytest.mark.slow  # the caption metrics' Java scorer: several seconds
def test_evaluate_takes_a_repo_id_and_revision(hub, capsys):
    assert main(["evaluate", "acme/tiny-shapes", "--revision", "v1", "--count", "4", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["count"] == 4


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["acme/missing"], "acme/missing: not in the Hub cache and the Hub cannot be reached"),
        (["acme/tiny-shapes", "--revision", "v9"], "acme/tiny-shapes@v9: not in the Hub cache"),
        (["acme/broken"], "acme/broken is not a captioner model package: model.safetensors is missing"),
    ],
)
def test_hub_failures_are_one_line(hub, trained_package, tmp_path, capsys, args, says):
    broken = tmp_path / "broken"
    shutil.copytree(trained_package, broken)
    (broken / "model.safetensors").unlink()
    hub_cache(hub[0], "acme/broken", broken)
    image = tmp_path / "scene.png"
    make_scene("test", 0).image.save(image)
    assert main(["caption", args[0], str(image), *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and says in err and "\n" not in err, err


@pytest.mark.slow  # a fresh process or a Java scorer: several seconds
def test_a_subprocess_reads_the_cache_from_the_environment(hub, tmp_path):
    """The command line as a user runs it: HF_HUB_CACHE and HF_HUB_OFFLINE from the environment."""
    import subprocess
    import sys

    image = tmp_path / "scene.png"
    make_scene("test", 1).image.save(image)
    run = subprocess.run(
        [sys.executable, "-m", "captioner", "caption", "acme/tiny-shapes", str(image), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    path, _caption, score = run.stdout.rstrip("\n").split("\t")  # a 4-step model may say nothing
    assert path == str(image) and float(score) <= 0


@pytest.mark.slow  # a short fine-tuning run: several seconds
def test_fine_tuning_starts_from_a_repo_id(hub, trained_package, shapes_folder, tmp_path):
    from tests.helpers import ROOT

    runs = tmp_path / "runs"
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/finetune.yaml"),
        "--model.init_from=acme/tiny-shapes@v1",
        f"--data.init_args.train={shapes_folder}",
        "--data.init_args.split.val_fraction=0.25",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={runs}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]
    assert main(args) == 0
    (package,) = runs.glob("*/version_*/model")
    assert (package / "tokenizer.json").read_text() == (trained_package / "tokenizer.json").read_text()
    started = json.loads((package / "training.json").read_text())["started_from"]  # what was asked, what was read
    assert started == {"repo_id": "acme/tiny-shapes", "revision": "v1", "commit": hub[1]}
