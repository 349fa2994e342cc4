"""`captioner caption|evaluate EXPORT --runtime onnx`: ONNX Runtime's logits under the project's own decoding give
the PyTorch model's tokens (greedy, beams with n-best, seeded sampling, every logit processor), the same rows and
the same metrics; an export folder that is not one, is another version's or lacks a file is one line, exit 2."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace

import pytest
import torch

from captioner.cli import main
from captioner.export.onnx import RECORD_FILE, record
from captioner.export.runtime import OnnxCaptioner
from captioner.generate import GenerationConfig, generate
from captioner.inference import caption
from captioner.model import Captioner

OPTIONS = {
    "greedy": {},
    "beams": {"num_beams": 3, "num_return_sequences": 2},
    "sampling": {"do_sample": True, "seed": 3, "num_return_sequences": 3, "top_k": 20, "temperature": 1.3},
    "processors": {
        "num_beams": 2,
        "min_new_tokens": 3,
        "max_new_tokens": 9,
        "no_repeat_ngram_size": 2,
        "repetition_penalty": 1.4,
        "length_penalty": 0.5,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_onnx_logits_under_our_decoding_give_the_pytorch_tokens(exported, options, batch, request):
    package, out = exported
    ours, tokenizer = Captioner.from_pretrained(package)
    onnx, onnx_tokenizer = OnnxCaptioner.load(out)
    assert (onnx_tokenizer.bos_id, onnx_tokenizer.eos_id) == (tokenizer.bos_id, tokenizer.eos_id)
    torch.manual_seed(4)
    pixels = torch.randn(batch, 3, *ours.preprocessing.input_size[1:])  # (B, 3, H, W)
    config = GenerationConfig(**options)
    want, got = generate(ours, pixels, tokenizer, config), generate(onnx, pixels, onnx_tokenizer, config)
    assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
    if not options and batch > 1 and request.node.callspec.params["exported"] == "gpt":  # the images' captions differ
        assert len({tuple(hyps[0].tokens) for hyps in want}) > 1  # (the other random models caption them alike)
    for a, b in zip(got, want, strict=True):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        assert [h.truncated for h in a] == [h.truncated for h in b]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["gpt"], indirect=True)
def test_caption_and_evaluate_with_runtime_onnx_give_the_packages_rows_and_metrics(exported, shapes_folder, tmp_path):
    package, out = exported
    for name, options in {"greedy": [], "beams": ["--num-beams", "3", "--num-return-sequences", "2"]}.items():
        for model, runtime in ((package, "torch"), (out, "onnx")):
            target = tmp_path / f"{name}-{runtime}.jsonl"
            assert (
                main(
                    [
                        "caption",
                        str(model),
                        str(shapes_folder / "images"),
                        "--runtime",
                        runtime,
                        "-o",
                        str(target),
                        *options,
                    ]
                )
                == 0
            )
        want, got = rows(tmp_path / f"{name}-torch.jsonl"), rows(tmp_path / f"{name}-onnx.jsonl")
        assert [(r["path"], r["caption"], len(r.get("n_best", []))) for r in got] == [
            (r["path"], r["caption"], len(r.get("n_best", []))) for r in want
        ]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-3)
    greedy = rows(tmp_path / "greedy-torch.jsonl")  # and from Python: captioner.caption on the export folder
    assert [c.text for c in caption([r["path"] for r in greedy], model=out)] == [r["caption"] for r in greedy]
    reports = {}
    for model, runtime in ((package, "torch"), (out, "onnx")):
        reports[runtime] = tmp_path / f"report-{runtime}.json"
        argv = ["evaluate", str(model), "--count", "8", "--runtime", runtime, "--report", str(reports[runtime])]
        assert main(argv) == 0
    found = {k: json.loads(p.read_text()) for k, p in reports.items()}
    assert found["onnx"]["metrics"] == pytest.approx(found["torch"]["metrics"])
    assert {k: found[k]["speed"]["runtime"] for k in found} == {"torch": "torch", "onnx": "onnx"}
    int8 = tmp_path / "int8.jsonl"
    argv = [
        "caption",
        str(out),
        str(shapes_folder / "images"),
        "--runtime",
        "onnx",
        "--quantize",
        "int8",
        "-o",
        str(int8),
    ]
    assert main(argv) == 0
    assert [r["path"] for r in rows(int8)] == [r["path"] for r in want] and all(r["caption"] for r in rows(int8))


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["gpt"], indirect=True)
def test_int8_runs_the_quantized_graphs_whose_logits_differ_a_little(exported, tmp_path, capsys):
    _, out = exported
    fp32, _ = OnnxCaptioner.load(out)
    int8, _ = OnnxCaptioner.load(out, quantized=True)
    assert [f.name for f in int8.files] == ["encoder_model_quantized.onnx", "decoder_model_merged_quantized.onnx"]
    torch.manual_seed(5)
    pixels = torch.randn(2, 3, *fp32.preprocessing.input_size[1:])  # (B, 3, H, W)
    a, b = fp32.encode(pixels), int8.encode(pixels)
    assert 1e-4 < (a.memory - b.memory).abs().max() < 0.1 * a.memory.abs().max()
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    (copy / "onnx" / "decoder_model_merged_quantized.onnx").unlink()
    assert main(["caption", str(copy), "x.png", "--runtime", "onnx", "--quantize", "int8"]) == 2
    err = capsys.readouterr().err
    assert "decoder_model_merged_quantized.onnx is missing" in err and err.count("\n") == 1


def fake_export(folder, model, tokenizer, record: dict | None) -> None:
    """The files of an export beside its graphs: a record (when given), `model`'s config.json, tokenizer.json."""
    folder.mkdir()
    if record is not None:
        (folder / RECORD_FILE).write_text(json.dumps(record))
    model.config.save(folder / "config.json")
    tokenizer.save(folder / "tokenizer.json")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("empty", "is not an ONNX export: it has no captioner_onnx.json"),
        ("no record", "holds ONNX graphs but no captioner_onnx.json"),
        ("format 99", "is ONNX export format 99 (captioner 9.9.9); this captioner reads format 1"),
        ("no graphs", "encoder_model.onnx is missing: the ONNX export is incomplete"),
        ("garbage graph", "encoder_model.onnx: ONNX Runtime cannot load it"),
        ("no config", "config.json is missing"),
        ("mixed", "its graphs are not those of config.json"),
    ],
)
def test_a_bad_export_folder_is_one_line_naming_what_is_wrong(
    case, expected, tmp_path, tiny_model, tokenizer, capsys, shapes_folder
):
    folder = tmp_path / "export"
    written = record(tiny_model.config)
    if case == "empty":
        folder.mkdir()
    else:
        fake_export(folder, tiny_model, tokenizer, None if case == "no record" else written)
    if case in ("no record", "garbage graph"):
        (folder / "onnx").mkdir()
        (folder / "onnx" / "encoder_model.onnx").write_bytes(b"not a protobuf")
    if case == "format 99":
        (folder / RECORD_FILE).write_text(json.dumps({"format": 99, "captioner_version": "9.9.9"}))
    if case == "no config":
        (folder / "config.json").unlink()
    if case == "mixed":  # the record of another model's export
        (folder / RECORD_FILE).write_text(json.dumps(record(replace(tiny_model.config, n_layer=3))))
    assert main(["caption", str(folder), str(shapes_folder), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and expected in err and err.count("\n") == 1
    assert "export" in err  # what to do: export it (again)


@pytest.mark.parametrize(
    "command, flags",
    [
        ("caption", ["--precision", "bf16"]),
        ("caption", ["--device", "cuda"]),
        ("caption", ["--devices", "2"]),
        ("caption", ["--attention-maps", "maps"]),
        ("caption", ["--revision", "v1"]),
        ("evaluate", ["--attention"]),
        ("evaluate", ["--precision", "bf16"]),
    ],
)
def test_runtime_onnx_refuses_what_it_cannot_run_in_one_line(command, flags, tmp_path, tiny_model, tokenizer, capsys):
    fake_export(tmp_path / "export", tiny_model, tokenizer, record(tiny_model.config))
    inputs = ["x.png"] if command == "caption" else []
    assert main([command, str(tmp_path / "export"), *inputs, "--runtime", "onnx", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: --runtime onnx ") and f"drop {flags[0]}" in err


def test_without_onnxruntime_the_flag_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    assert main(["caption", str(tmp_path), "x.png", "--runtime", "onnx"]) == 2
    assert capsys.readouterr().err == "captioner: error: --runtime onnx needs ONNX Runtime: pip install -e '.[onnx]'\n"


def test_an_export_given_to_the_torch_runtime_is_told_to_pass_runtime_onnx(tmp_path, tiny_model, tokenizer, capsys):
    fake_export(tmp_path / "export", tiny_model, tokenizer, record(tiny_model.config))
    assert main(["caption", str(tmp_path / "export"), "x.png"]) == 2
    assert "is an ONNX export (captioner export-onnx): pass --runtime onnx" in capsys.readouterr().err
