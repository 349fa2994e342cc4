"""`captioner caption|evaluate EXPORT --runtime onnx`: ONNX Runtime's logits under the project's own decoding give
the PyTorch model's tokens (greedy, beams with n-best, seeded sampling, every logit processor), the same rows and
the same metrics; an export folder that is not one, is another version's or lacks a file is one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from captioner.cli import main
from captioner.export.onnx import FORMAT, RECORD_FILE
from captioner.export.runtime import OnnxCaptioner
from captioner.generate import GenerationConfig, generate
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
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_onnx_logits_under_our_decoding_give_the_pytorch_tokens(exported, options, request):
    package, out = exported
    ours, tokenizer = Captioner.from_pretrained(package)
    onnx, onnx_tokenizer = OnnxCaptioner.load(out)
    assert (onnx_tokenizer.bos_id, onnx_tokenizer.eos_id) == (tokenizer.bos_id, tokenizer.eos_id)
    torch.manual_seed(4)
    pixels = torch.randn(4, 3, *ours.preprocessing.input_size[1:])  # (B, 3, H, W)
    config = GenerationConfig(**options)
    want, got = generate(ours, pixels, tokenizer, config), generate(onnx, pixels, onnx_tokenizer, config)
    assert [[h.tokens for h in hyps] for hyps in got] == [[h.tokens for h in hyps] for hyps in want]
    if not options and request.node.callspec.params["exported"] == "gpt":  # the images give different captions
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
    reports = {}
    for model, runtime in ((package, "torch"), (out, "onnx")):
        reports[runtime] = tmp_path / f"report-{runtime}.json"
        argv = ["evaluate", str(model), "--count", "8", "--runtime", runtime, "--report", str(reports[runtime])]
        assert main(argv) == 0
    metrics = {k: json.loads(p.read_text())["metrics"] for k, p in reports.items()}
    assert metrics["onnx"] == pytest.approx(metrics["torch"])
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
    ],
)
def test_a_bad_export_folder_is_one_line_naming_what_is_wrong(
    case, expected, tmp_path, tiny_model, tokenizer, capsys, shapes_folder
):
    folder = tmp_path / "export"
    record = {"format": FORMAT, "captioner_version": "0.1.0"}
    if case == "empty":
        folder.mkdir()
    else:
        fake_export(folder, tiny_model, tokenizer, None if case == "no record" else record)
    if case in ("no record", "garbage graph"):
        (folder / "onnx").mkdir()
        (folder / "onnx" / "encoder_model.onnx").write_bytes(b"not a protobuf")
    if case == "format 99":
        (folder / RECORD_FILE).write_text(json.dumps({"format": 99, "captioner_version": "9.9.9"}))
    if case == "no config":
        (folder / "config.json").unlink()
    assert main(["caption", str(folder), str(shapes_folder), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and expected in err and err.count("\n") == 1
    assert "export" in err  # what to do: export it (again)


@pytest.mark.parametrize(
    "flags", [["--precision", "bf16"], ["--device", "cuda"], ["--devices", "2"], ["--attention-maps", "maps"]]
)
def test_runtime_onnx_refuses_what_it_cannot_run_in_one_line(flags, tmp_path, tiny_model, tokenizer, capsys):
    fake_export(tmp_path / "export", tiny_model, tokenizer, {"format": FORMAT})
    assert main(["caption", str(tmp_path / "export"), "x.png", "--runtime", "onnx", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: --runtime onnx ") and f"drop {flags[0]}" in err


def test_an_export_given_to_the_torch_runtime_is_told_to_pass_runtime_onnx(tmp_path, tiny_model, tokenizer, capsys):
    fake_export(tmp_path / "export", tiny_model, tokenizer, {"format": FORMAT})
    assert main(["caption", str(tmp_path / "export"), "x.png"]) == 2
    assert "is an ONNX export (captioner export-onnx): pass --runtime onnx" in capsys.readouterr().err
