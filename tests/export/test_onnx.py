"""`captioner export-onnx`: ONNX Runtime on the exported graphs gives the library's memory, image keys/values and
logits, at the first step and at a step with a past, for a GPT-style and a Llama-style decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from captioner.cli import main
from captioner.config import CaptionerConfig
from captioner.export.onnx import DECODER_FILE, ENCODER_FILE, decoder_names, encoder_names, export_onnx
from captioner.model import Captioner
from tests.test_decoder import STYLES


def tiny_package(path, tokenizer, style: str):
    """A random tiny captioner of `style` with its cross-attention gates open (so the image matters), saved."""
    torch.manual_seed(0)
    config = CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, n_layer=2, **STYLES[style])
    model = Captioner(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.8)
    return model.save_pretrained(path, tokenizer)


@pytest.fixture(scope="module", params=sorted(STYLES))
def exported(request, tmp_path_factory, tokenizer):
    tmp = tmp_path_factory.mktemp(f"onnx-{request.param}")
    package = tiny_package(tmp / "package", tokenizer, request.param)
    return package, export_onnx(package, tmp / "onnx-export")


def sessions(out):
    import onnxruntime as ort

    return tuple(
        ort.InferenceSession(str(out / "onnx" / name), providers=["CPUExecutionProvider"])
        for name in (ENCODER_FILE, DECODER_FILE)
    )


def test_export_onnx_refuses_an_existing_out_in_one_line(tmp_path, tokenizer, capsys):
    package = tiny_package(tmp_path / "package", tokenizer, "gpt")
    (tmp_path / "out").mkdir()
    assert main(["export-onnx", str(package), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and "exists" in err and "--overwrite" in err
    assert err.count("\n") == 1
    assert list((tmp_path / "out").iterdir()) == []  # nothing written


@pytest.mark.slow
def test_the_folder_holds_the_graphs_and_the_files_beside_them(exported):
    import onnx

    package, out = exported
    assert {p.name for p in (out / "onnx").iterdir()} == {ENCODER_FILE, DECODER_FILE}
    for name in ("config.json", "tokenizer.json", "special_tokens.json"):  # the package's own files
        assert (out / name).read_bytes() == (package / name).read_bytes()
    generation = json.loads((out / "generation_config.json").read_text())
    special = json.loads((package / "special_tokens.json").read_text())
    assert generation["eos_token_id"] == special["eos_token_id"]
    assert generation["decoder_start_token_id"] == special["bos_token_id"]
    assert json.loads((out / "preprocessor_config.json").read_text())["do_normalize"] is True
    model, _ = Captioner.from_pretrained(package)
    for name, names in ((ENCODER_FILE, encoder_names(model)), (DECODER_FILE, decoder_names(model))):
        onnx.checker.check_model(str(out / "onnx" / name), full_check=True)
        graph = onnx.load(str(out / "onnx" / name)).graph
        assert ([i.name for i in graph.input], [o.name for o in graph.output]) == names
    layers = model.config.n_layer
    assert decoder_names(model)[1][-2:] == [f"present.{layers - 1}.key", f"present.{layers - 1}.value"]


@pytest.mark.slow
def test_onnx_runtime_gives_the_librarys_outputs_at_the_first_step_and_with_a_past(exported):
    package, out = exported
    model, _ = Captioner.from_pretrained(package)
    encoder, decoder = sessions(out)
    enc_in, enc_out = encoder_names(model)
    dec_in, dec_out = decoder_names(model)
    torch.manual_seed(2)
    B, N = 3, 0  # a batch the export was not traced with
    pixels = torch.randn(B, 3, *model.preprocessing.input_size[1:])  # (B, 3, H, W)
    prompt = torch.randint(3, model.config.vocab_size, (B, 4))  # (B, T): four tokens, then one, then two
    steps = [prompt[:, :4], prompt[:, 3:], torch.randint(3, model.config.vocab_size, (B, 2))]
    onnx_image = dict(zip(enc_out, encoder.run(None, {enc_in[0]: pixels.numpy()}), strict=True))
    with torch.no_grad():
        memory = model.encode(pixels)  # (B, N, D)
        image_kv = model.image_kv(memory)
        np.testing.assert_allclose(onnx_image["last_hidden_state"], memory.numpy(), atol=1e-4, rtol=0)
        for (k, v), i in zip(image_kv, model.config.cross_layers(), strict=True):
            np.testing.assert_allclose(onnx_image[f"present.{i}.encoder.key"], k.numpy(), atol=1e-4, rtol=0)
            np.testing.assert_allclose(onnx_image[f"present.{i}.encoder.value"], v.numpy(), atol=1e-4, rtol=0)
        _, groups, head_size = model.config.heads()
        feed = {
            name.replace("present.", "past_key_values.", 1): t for name, t in onnx_image.items() if name != enc_out[0]
        }
        feed |= {name: np.zeros((B, groups, 0, head_size), np.float32) for name in dec_in if name not in feed}
        model.decoder.set_kv_cache(B)
        for ids in steps:  # P = 0, then P = 4, then P = 5: the library's decoding over its KV cache
            expected = model.decoder.logits(model.decoder.hidden(ids, image_kv, start=N))  # (B, T, V)
            got = dict(zip(dec_out, decoder.run(None, {**feed, "input_ids": ids.numpy()}), strict=True))
            assert got["logits"].shape == expected.shape
            np.testing.assert_allclose(got["logits"], expected.numpy(), atol=1e-4, rtol=0)
            N += ids.size(1)
            for name, t in got.items():  # the present feeds back as the past
                if name != "logits":
                    assert t.shape[2] == N
                    feed[name.replace("present.", "past_key_values.", 1)] = t
        model.decoder.clear_kv_cache()
