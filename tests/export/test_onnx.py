"""`captioner export-onnx`: ONNX Runtime on the exported graphs gives the library's memory, image keys/values and
logits, at the first step and at steps with a past, for a GPT-style, a Llama-style and an every-option decoder
(the int8 graphs close to them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from captioner.cli import main
from captioner.export.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    QUANTIZED,
    decoder_names,
    encoder_names,
    export_graph,
    quantized_name,
)
from captioner.model import Captioner
from tests.export.packages import tiny_package


def test_export_onnx_refuses_an_existing_out_in_one_line(tmp_path, tokenizer, capsys):
    package = tiny_package(tmp_path / "package", tokenizer, "gpt")
    (tmp_path / "out").mkdir()
    assert main(["export-onnx", str(package), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and "exists" in err and "--overwrite" in err
    assert err.count("\n") == 1
    assert list((tmp_path / "out").iterdir()) == []  # nothing written


class Eigenvalues(torch.nn.Module):
    """A real module ONNX has no operator for (torch.linalg.eig)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eig(x)[0].real


@pytest.mark.slow  # the dynamo exporter tries for seconds before it gives up
def test_a_graph_that_cannot_be_exported_is_refused_naming_the_part(tmp_path):
    dynamic = {"x": {0: torch.export.Dim("batch_size", min=1)}}
    with pytest.raises(ValueError, match=r"^the decoder of this package cannot be exported to ONNX: .*linalg_eig"):
        export_graph(
            "decoder", Eigenvalues().eval(), (torch.randn(2, 3, 3),), dynamic, (["x"], ["y"]), tmp_path / "m.onnx"
        )
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_the_folder_holds_the_graphs_and_the_files_beside_them(exported):
    import onnx

    package, out = exported
    graphs = [ENCODER_FILE, DECODER_FILE, quantized_name(ENCODER_FILE), quantized_name(DECODER_FILE)]
    assert {p.name for p in (out / "onnx").iterdir()} == set(graphs)
    for name in ("config.json", "tokenizer.json", "special_tokens.json"):  # the package's own files
        assert (out / name).read_bytes() == (package / name).read_bytes()
    generation = json.loads((out / "generation_config.json").read_text())
    special = json.loads((package / "special_tokens.json").read_text())
    assert generation["eos_token_id"] == special["eos_token_id"]
    assert generation["decoder_start_token_id"] == special["bos_token_id"]
    assert json.loads((out / "preprocessor_config.json").read_text())["do_normalize"] is True
    model, _ = Captioner.from_pretrained(package)
    for name, names in zip(graphs, [encoder_names(model.config), decoder_names(model.config)] * 2, strict=True):
        onnx.checker.check_model(str(out / "onnx" / name), full_check=True)
        graph = onnx.load(str(out / "onnx" / name)).graph
        assert ([i.name for i in graph.input], [o.name for o in graph.output]) == names
    for name in (ENCODER_FILE, DECODER_FILE):  # int8 weights: MatMulInteger on dynamically quantized activations
        ops = {node.op_type for node in onnx.load(str(out / "onnx" / quantized_name(name))).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    layers = model.config.n_layer
    assert decoder_names(model.config)[1][-2:] == [f"present.{layers - 1}.key", f"present.{layers - 1}.value"]


def decode(out, package, suffix: str = ""):
    """Encode three random images and decode three steps (P = 0, 4, 5; T = 4, 1, 2) with ONNX Runtime on the
    graphs ending in `suffix` and with the library over its KV cache: the ONNX and the library's (memory, image
    K/V) by name, then each step's ONNX and library logits (B, T, V)."""
    import onnxruntime as ort

    model, _ = Captioner.from_pretrained(package)
    encoder, decoder = (
        ort.InferenceSession(str(out / "onnx" / quantized_name(name) if suffix else out / "onnx" / name))
        for name in (ENCODER_FILE, DECODER_FILE)
    )
    enc_in, enc_out = encoder_names(model.config)
    dec_in, dec_out = decoder_names(model.config)
    torch.manual_seed(2)
    B, P = 3, 0  # a batch the export was not traced with
    pixels = torch.randn(B, 3, *model.preprocessing.input_size[1:])  # (B, 3, H, W)
    prompt = torch.randint(3, model.config.vocab_size, (B, 5))  # (B, T): four tokens, then one, then two
    steps = [prompt[:, :4], prompt[:, 4:], torch.randint(3, model.config.vocab_size, (B, 2))]
    onnx_image = dict(zip(enc_out, encoder.run(None, {enc_in[0]: pixels.numpy()}), strict=True))
    with torch.no_grad():
        memory = model.encode(pixels)  # (B, N, D)
        image_kv = model.image_kv(memory)
        ours = {"last_hidden_state": memory.numpy()}
        for (k, v), i in zip(image_kv, model.config.cross_layers(), strict=True):
            ours |= {f"present.{i}.encoder.key": k.numpy(), f"present.{i}.encoder.value": v.numpy()}
        yield onnx_image, ours
        _, groups, head_size = model.config.heads()
        feed = {past_name(name): t for name, t in onnx_image.items() if name != enc_out[0]}
        feed |= {name: np.zeros((B, groups, 0, head_size), np.float32) for name in dec_in if name not in feed}
        model.decoder.set_kv_cache(B)
        for ids in steps:
            expected = model.decoder.logits(model.decoder.hidden(ids, image_kv, start=P))  # (B, T, V)
            got = dict(zip(dec_out, decoder.run(None, {**feed, "input_ids": ids.numpy()}), strict=True))
            P += ids.size(1)
            for name, t in got.items():  # the present feeds back as the past
                if name != "logits":
                    assert t.shape[2] == P
                    feed[past_name(name)] = t
            yield got["logits"], expected.numpy()


def past_name(present: str) -> str:
    """present.X -> past_key_values.X: an output's input at the next step."""
    return present.replace("present.", "past_key_values.", 1)


@pytest.mark.slow
def test_onnx_runtime_gives_the_librarys_outputs_at_the_first_step_and_with_a_past(exported):
    runs = decode(*reversed(exported))
    onnx_image, ours = next(runs)
    assert onnx_image.keys() == ours.keys()
    for name in ours:
        np.testing.assert_allclose(onnx_image[name], ours[name], atol=1e-4, rtol=0)
    for got, expected in runs:
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_the_int8_graphs_stay_close_to_the_librarys_logits(exported):
    runs = decode(*reversed(exported), suffix=QUANTIZED)
    next(runs)
    for got, expected in runs:  # int8 weights: up to about 7 % of the largest logit on these tiny random models
        assert got.shape == expected.shape
        assert 1e-4 < np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
        assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9  # the greedy token, nearly everywhere
