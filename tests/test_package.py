"""The model package in one room: only captioner.package names its files; loading reads each file once and builds
the model once; training.json is one typed record, and the files of older captioners still load."""

import ast
import json
import os
from pathlib import Path

import pytest
import torch

from captioner.model import Captioner
from captioner.package import (
    PACKAGE_FILES,
    TRAINING_FILE,
    Objective,
    Origin,
    TrainingInfo,
    read_package,
    read_training,
)
from tests.helpers import ROOT

NAMES = ("config.json", "model.safetensors", "tokenizer.json", "special_tokens.json", "training.json")
# The transformers folder of `export-hf` has files of the same names, but they are transformers' own: its
# save_pretrained names and writes them, and captioner/hf/export.py names none (it reads the captioner package's
# tokenizer through captioner.package). The two remote-code files are exempt: they are copied into that folder and
# import only torch, timm and transformers, never captioner, so they could not use captioner.package's names; any
# file name they held would be a transformers file. Docstrings and comments may name the files in prose.
EXEMPT = {"captioner/package.py", "captioner/hf/configuration_captioner.py", "captioner/hf/modeling_captioner.py"}


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of a module that are not docstrings (f-strings' literal parts included)."""
    scopes = [
        n for n in ast.walk(tree) if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    firsts = [s.body[0] for s in scopes if s.body and isinstance(s.body[0], ast.Expr)]
    docstrings = {id(e.value) for e in firsts if isinstance(e.value, ast.Constant)}
    strings = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [n for n in strings if id(n) not in docstrings]


def test_only_the_package_module_names_the_package_files():
    found = []
    for path in sorted((ROOT / "captioner").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where in EXEMPT:
            continue
        for node in _code_strings(ast.parse(path.read_text())):
            text = node.value.strip()
            if any(text == name or text.endswith(("/" + name, "\\" + name)) for name in NAMES):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    assert not found, "name the package's files through captioner.package: " + "; ".join(found)
    package_strings = {n.value for n in _code_strings(ast.parse((ROOT / "captioner/package.py").read_text()))}
    assert set(NAMES) <= package_strings  # the test would see them if they were named anywhere else


def test_from_pretrained_reads_each_file_once_and_builds_the_model_once(tiny_model, tokenizer, tmp_path, monkeypatch):
    import captioner.weights
    from captioner.tokenizer import CaptionTokenizer

    package = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer, training=TrainingInfo(steps=1))
    reads: list[str] = []
    for method in ("read_text", "read_bytes"):
        original = getattr(Path, method)
        monkeypatch.setattr(Path, method, lambda self, *a, f=original, **k: reads.append(self.name) or f(self, *a, **k))
    header, tensors, load = captioner.weights.read_header, captioner.weights.load_model, CaptionTokenizer.load
    monkeypatch.setattr(captioner.weights, "read_header", lambda p: reads.append(f"{p.name} header") or header(p))
    monkeypatch.setattr(
        captioner.weights, "load_model", lambda m, p, **k: reads.append("tensors") or tensors(m, p, **k)
    )
    monkeypatch.setattr(
        CaptionTokenizer, "load", classmethod(lambda cls, p, s=None: reads.append(p.name) or load(p, s))
    )
    builds = []
    init = Captioner.__init__
    monkeypatch.setattr(Captioner, "__init__", lambda self, *a, **k: builds.append(1) or init(self, *a, **k))
    model, _ = Captioner.from_pretrained(package)
    # no training.json
    assert sorted(reads) == [
        "config.json",
        "model.safetensors header",
        "special_tokens.json",
        "tensors",
        "tokenizer.json",
    ]
    assert len(builds) == 1
    ids = torch.randint(0, tokenizer.vocab_size, (2, 5))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images, ids), tiny_model.eval()(images, ids))
    assert model.decoder.lm_head.weight is model.decoder.wte.weight  # the tie survives the meta-device build
    assert not [n for n, t in model.state_dict().items() if t.is_meta]


def test_a_package_holds_its_files_and_a_training_record(tiny_model, tokenizer, tmp_path):
    info = TrainingInfo(steps=3, data={"source": "shapes"}, objective=Objective(), config=tiny_model.config.to_dict())
    package = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer, training=info)
    assert sorted(p.name for p in package.iterdir()) == sorted(PACKAGE_FILES)
    read = read_package(package)
    assert read.config == tiny_model.config and read.training == info
    assert read_training(tmp_path) is None  # no training.json: written by save_pretrained alone


def test_training_info_round_trips_and_what_older_captioners_wrote_still_loads():
    old = {"steps": 4, "data": {"source": "shapes", "holdout_pairs": [["red", "triangle"]]}, "used_token_ids": [1, 5]}
    info = TrainingInfo.from_dict(old)
    assert (info.steps, info.data, info.used_token_ids) == (4, old["data"], [1, 5])
    assert info.objective is info.started_from is info.optimizer is info.config is None
    full = TrainingInfo(
        steps=2,
        objective=Objective("scst", reward="CIDEr-D", baseline="greedy", samples=3),
        started_from=Origin(repo_id="acme/base", revision="v1", commit="abc"),
        optimizer={"lr": 1e-5, "betas": [0.9, 0.98]},
        config={"n_layer": 1},
    )
    written = json.loads(full.to_json())
    assert written["objective"] == {"name": "scst", "reward": "CIDEr-D", "baseline": "greedy", "samples": 3}
    assert written["started_from"] == {"repo_id": "acme/base", "revision": "v1", "commit": "abc"}
    assert TrainingInfo.from_dict(written) == full
    assert TrainingInfo.from_dict({**written, "added_later": 1}) == full  # a newer captioner's fields are skipped
    assert json.loads(TrainingInfo(objective=Objective()).to_json())["objective"] == {"name": "cross_entropy"}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[1, 2]", "a JSON object of fields, not list"),
        ('{"steps": "4"}', "field 'steps' is '4'"),
        ('{"used_token_ids": [1, "a"]}', "used_token_ids"),
        ('{"objective": {"name": "scst", "samples": "five"}}', "field 'objective'"),
        ('{"started_from": {"url": "x"}}', "field 'started_from'"),
        ("{not json", "not the training.json `captioner fit` writes"),
    ],
)
def test_a_training_json_that_is_not_one_is_named(tmp_path, text, said):
    (tmp_path / TRAINING_FILE).write_text(text)
    with pytest.raises(ValueError, match="training.json: not the training.json") as err:
        read_training(tmp_path)
    assert said in str(err.value)


def test_a_training_json_link_outside_the_package_is_refused(tmp_path):
    (tmp_path / "secret").write_text('{"steps": 1}')
    (tmp_path / "pkg").mkdir()
    os.symlink(tmp_path / "secret", tmp_path / "pkg" / TRAINING_FILE)
    with pytest.raises(ValueError, match="outside the package"):
        read_training(tmp_path / "pkg")


def test_the_origin_of_a_folder_and_of_a_hub_cache_snapshot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "model").mkdir(parents=True)
    assert Origin.of("runs/model") == Origin(path=str(tmp_path / "runs" / "model"))
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert Origin.of(snapshot) == Origin(repo_id="acme/tiny", revision="0123abcd", commit="0123abcd")


def test_a_timm_encoder_with_computed_buffers_loads_equal(tokenizer, tmp_path):
    """EVA-02's rotary tables are non-persistent buffers: built on the meta device, they are made again on load."""
    from captioner.config import CaptionerConfig

    config = CaptionerConfig.from_name(
        "tiny",
        encoder_name="eva02_tiny_patch14_224",
        encoder_img_size=28,
        encoder_patch_size=None,
        vocab_size=tokenizer.vocab_size,
    )
    torch.manual_seed(0)
    model = Captioner(config).eval()
    assert any(m._non_persistent_buffers_set for m in model.encoder.modules())
    loaded, _ = Captioner.from_pretrained(model.save_pretrained(tmp_path / "pkg", tokenizer))
    images, ids = torch.randn(2, 3, 28, 28), torch.randint(0, tokenizer.vocab_size, (2, 4))
    with torch.no_grad():
        assert torch.equal(loaded(images, ids), model(images, ids))
