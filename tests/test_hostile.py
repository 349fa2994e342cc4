"""Input that used to hang: a FIFO given as an image, an empty evaluation, a failing METEOR, a 1 MB caption."""

import gc
import json
import logging
import os
import signal
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.metrics import java_available, meteor
from captioner.shapes import make_scene
from captioner.tokenizer import CaptionTokenizer


@pytest.fixture
def deadline():
    """Fail instead of hanging: SIGALRM after 120 s."""

    def expired(*_):
        raise TimeoutError("hung")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_fifo_gets_an_error_row_by_name_and_in_a_folder(workers, trained_package, tmp_path, deadline):
    folder = tmp_path / "in"
    folder.mkdir()
    make_scene("test", 0).image.save(folder / "good.png")
    os.mkfifo(folder / "pipe.png")
    for inputs in ([str(folder / "pipe.png"), str(folder / "good.png")], [str(folder)]):
        out = tmp_path / f"rows{len(inputs)}.jsonl"
        assert main(["caption", str(trained_package), *inputs, "-o", str(out), "--workers", workers]) == 1
        rows = {os.path.basename(r["path"]): r for r in map(json.loads, out.read_text().splitlines())}
        assert "a FIFO" in rows["pipe.png"]["error"] and "caption" in rows["good.png"]


def test_evaluate_count_zero_is_refused(trained_package, capsys, deadline):
    assert main(["evaluate", str(trained_package), "--count", "0"]) == 2
    assert "argument --count: 0 is not a whole number >= 1" in capsys.readouterr().err


def java_children() -> list[str]:
    """The live (not zombie) child processes of this one that run java."""
    found = []
    for stat_file in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            proc = Path("/proc", stat_file)
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and comm == "java":
            found.append(stat_file)
    return found


@pytest.mark.skipif(not java_available(), reason="METEOR runs on Java")
def test_a_failing_meteor_ends_its_java_process(deadline):
    with pytest.raises(RuntimeError, match="METEOR scorer"):
        meteor({"a": ["a cat"]}, {"a": ["one", "two"]})  # two hypotheses for a key: the scorer's assert fires
    assert java_children() == []  # ended at once, not left waiting on a lock that is never released
    gc.collect()  # the scorer's own clean-up runs and returns


def test_a_huge_caption_does_not_stall_the_tokenizer(caplog, deadline):
    with caplog.at_level(logging.WARNING):  # the deadline fails it if it stalls (it took minutes)
        tok = CaptionTokenizer.train(["a red circle"] * 50 + ["word " * 200_000], vocab_size=300)
    assert tok.vocab_size > 3
    assert any("1 caption(s) cut to 1000 characters" in r.getMessage() for r in caplog.records)


def _edit_package(package, tmp_path, config=None, tensors=None):
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "edited"
    shutil.copytree(package, copy)
    if config:
        data = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**data, **config}))
    if tensors:
        weights = load_file(copy / "model.safetensors")
        save_file({**weights, **tensors(weights)}, copy / "model.safetensors")
    return copy


def test_a_huge_config_is_named_before_anything_is_built(trained_package, tmp_path, deadline):
    from captioner.model import Captioner

    edited = _edit_package(trained_package, tmp_path, config={"n_layer": 10000})
    with pytest.raises(ValueError, match=r"config.json does not match model.safetensors: n_layer=10000 but the"):
        Captioner.from_pretrained(edited)  # used to allocate gigabytes first


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: {"decoder.ln_f.weight": w["decoder.ln_f.weight"].long()}, "stored as I64"),
        (lambda w: {"decoder.ln_f.weight": w["decoder.ln_f.weight"] * float("nan")}, "NaN or infinite"),
    ],
    ids=["int64", "nan"],
)
def test_weights_that_cannot_caption_are_refused(edit, message, trained_package, tmp_path):
    from captioner.model import Captioner

    with pytest.raises(ValueError, match=message):
        Captioner.from_pretrained(_edit_package(trained_package, tmp_path, tensors=edit))


def _preprocessing(package, **values):
    return {"preprocessing": {**json.loads((package / "config.json").read_text())["preprocessing"], **values}}


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"interpolation": "evil"}, "interpolation"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"input_size": [3, -8, 32]}, "input_size"),
        ({"std": [1.0, 0.0, 1.0]}, "std"),
        ({"crop_pct": float("inf")}, "crop_pct"),
        ({"std": [1e-300, 0.2, 0.2]}, "std"),
    ],
    ids=["interpolation", "mean", "input_size", "std", "crop_pct", "tiny-std"],
)
def test_preprocessing_no_transform_can_use_is_named_at_load(values, field, trained_package, tmp_path, capsys):
    from captioner.model import Captioner

    edited = _edit_package(trained_package, tmp_path, config=_preprocessing(trained_package, **values))
    with pytest.raises(ValueError, match=f"preprocessing {field} is"):
        Captioner.from_pretrained(edited)
    make_scene("test", 0).image.save(tmp_path / "a.png")
    assert main(["caption", str(edited), str(tmp_path / "a.png")]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("captioner: error: ") and f"preprocessing {field}" in said[0]


def test_a_weights_link_outside_the_package_is_refused(trained_package, tmp_path, capsys):
    import shutil

    from captioner.model import Captioner

    edited = _edit_package(trained_package, tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(edited / "model.safetensors", outside)  # valid weights: the link itself is what is refused
    (edited / "model.safetensors").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the package"):
        Captioner.from_pretrained(edited)
    (edited / "model.safetensors").unlink()
    (edited / "model.safetensors").symlink_to("/etc/passwd")
    make_scene("test", 0).image.save(tmp_path / "a.png")
    assert main(["caption", str(edited), str(tmp_path / "a.png")]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "/etc/passwd, outside the package" in said[0]


def test_a_hugging_face_cache_snapshot_whose_files_link_into_blobs_loads(trained_package, tmp_path):
    import hashlib

    from captioner.model import Captioner

    repo = tmp_path / "hub" / "models--someone--captioner"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in trained_package.iterdir():
        if file.is_file():
            blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
            blob.write_bytes(file.read_bytes())
            (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    assert Captioner.from_pretrained(snapshot)[0].config == Captioner.from_pretrained(trained_package)[0].config


def test_a_header_claiming_a_100_gb_tensor_is_refused_at_once(trained_package, tmp_path, capsys, deadline):
    from captioner.model import Captioner

    edited = _edit_package(trained_package, tmp_path)
    header = json.dumps(
        {"decoder.ln_f.weight": {"dtype": "F32", "shape": [25_000_000_000], "data_offsets": [0, 100_000_000_000]}}
    ).encode()
    (edited / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    with pytest.raises(ValueError, match="claims bytes 0..100,000,000,000 for shape"):
        Captioner.from_pretrained(edited)
    make_scene("test", 0).image.save(tmp_path / "a.png")
    assert main(["caption", str(edited), str(tmp_path / "a.png")]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "damaged or truncated" in said[0]


@pytest.mark.parametrize("header", [b"[" * 100_000, b'{"a": ' + b"9" * 5000 + b"}"], ids=["deep", "digits"])
def test_a_weights_header_that_is_not_readable_json_is_named(header, tmp_path):
    from captioner.weights import read_header

    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ValueError, match="model.safetensors: not a safetensors file"):
        read_header(path)
