"""CPU inference options: dynamic int8 linear layers keep the captions, and bf16 says where the CPU lacks it."""

import json

import pytest
import torch
from torch import nn

from captioner.cli import main
from captioner.inference import caption_batch
from captioner.model import Captioner
from captioner.quantize import cpu_has_bf16, quantize_int8
from captioner.shapes import make_scene


def test_int8_swaps_every_linear_and_keeps_the_outputs(trained_package, images):
    model, tok = Captioner.from_pretrained(trained_package)
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    x = torch.stack([model.preprocessing.eval_transform()(make_scene("test", i).image) for i in range(8)])
    ids = torch.full((8, 1), tok.bos_id)
    with torch.inference_mode():
        want_logits, want = model(x, ids), caption_batch(model, tok, x)
        quantize_int8(model)
        got_logits, got = model(x, ids), caption_batch(model, tok, x)
    assert linears > 0 and not any(type(m) is nn.Linear for m in model.modules())
    assert sum(m._get_name() == "DynamicQuantizedLinear" for m in model.modules()) == linears
    assert (got_logits - want_logits).abs().max() < 0.05 * want_logits.abs().max()
    assert sum(a.text == b.text for a, b in zip(got, want, strict=True)) >= 7


def test_the_commands_take_the_options(trained_package, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("captioner.metrics.java_available", lambda: False)  # the Java scorers: tests/test_metrics.py
    monkeypatch.setattr("captioner.metrics._warned", True)  # its note once per process: whichever test comes first
    image = tmp_path / "a.png"
    make_scene("test", 0).image.save(image)
    out = tmp_path / "c.jsonl"
    assert main(["caption", str(trained_package), str(image), "-o", str(out), "--quantize", "int8"]) == 0
    assert "caption" in json.loads(out.read_text())
    report = tmp_path / "r.json"
    args = ["evaluate", str(trained_package), "--count", "8", "--quantize", "int8", "--report", str(report)]
    assert main(args) == 0
    assert json.loads(report.read_text())["speed"] == {"precision": "32", "quantize": "int8", "runtime": "torch"}
    capsys.readouterr()
    assert main(["caption", str(trained_package), str(image), "--quantize", "int8", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error:") and "--precision bf16" in err and "\n" not in err


@pytest.mark.skipif(cpu_has_bf16(), reason="this CPU computes bf16 natively: nothing to say")
def test_bf16_on_a_cpu_without_it_says_so_and_still_captions(trained_package, tmp_path, capsys):
    image = tmp_path / "a.png"
    make_scene("test", 0).image.save(image)
    assert main(["caption", str(trained_package), str(image), "--precision", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "captioner: note: --precision bf16: this CPU has no AVX512-BF16 or AMX" in err
