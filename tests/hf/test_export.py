"""`captioner export-hf`: transformers' Auto classes load the folder, and its generate() gives our captions."""

import ast
import json
import subprocess
import sys

import pytest
import torch

from captioner.cli import main
from captioner.generate import GenerationConfig
from captioner.inference import caption_batch
from captioner.model import Captioner
from captioner.shapes.scenes import make_scene


@pytest.fixture(scope="module")
def exported(trained_package, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "tiny-hf"
    assert main(["export-hf", str(trained_package), str(out)]) == 0
    return out


def test_the_folder_holds_what_transformers_reads(exported, trained_package):
    names = {p.name for p in exported.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "configuration_captioner.py",
        "modeling_captioner.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "generation_config.json",
    } <= names
    assert json.loads((exported / "config.json").read_text())["auto_map"]["AutoModelForImageTextToText"] == (
        "modeling_captioner.CaptionerForConditionalGeneration"
    )
    package = json.loads((trained_package / "config.json").read_text())
    assert package["encoder_conv_stem"]  # the demo config's conv stem travels (and generate below runs through it)
    assert json.loads((exported / "config.json").read_text())["encoder_conv_stem"] == package["encoder_conv_stem"]
    for code in ("configuration_captioner.py", "modeling_captioner.py"):  # self-contained: no captioner import
        tree = ast.parse((exported / code).read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in imported if m.split(".")[0] == "captioner"], code


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_gives_the_captions_of_caption_batch_token_for_token(exported, trained_package, num_beams):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    hf = AutoModelForImageTextToText.from_pretrained(exported, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(exported, trust_remote_code=True)
    hf_tok = AutoTokenizer.from_pretrained(exported, trust_remote_code=True)
    model, tok = Captioner.from_pretrained(trained_package)
    images = [make_scene("test", i).image for i in range(12)]
    pixels = processor(images, return_tensors="pt").pixel_values  # (B, 3, H, W)
    ours_pixels = torch.stack([model.preprocessing.eval_transform()(im) for im in images])
    # the image processor is the package's preprocessing; resizing (64 px scenes to this model's 32 px) may round a
    # few pixels to the neighbouring intensity level (transformers resizes its own way), so the model comparison
    # below feeds both the same pixels
    level = 1 / 255 / min(model.preprocessing.std)
    assert (pixels - ours_pixels).abs().max() <= level + 1e-6 and (
        (pixels - ours_pixels).abs() > 1e-6
    ).float().mean() < 0.01
    ours = caption_batch(model, tok, ours_pixels, GenerationConfig(num_beams=num_beams))
    with torch.inference_mode():
        sequences = hf.generate(pixel_values=ours_pixels, num_beams=num_beams).tolist()
    for caption, row in zip(ours, sequences, strict=True):
        assert row[0] == tok.bos_id
        tokens = row[1:]
        tokens = tokens[: tokens.index(tok.eos_id)] if tok.eos_id in tokens else tokens
        assert tokens == caption.tokens
        # a random model's stray bytes: transformers decodes them to U+FFFD, captioner drops them (its decode)
        assert hf_tok.decode(row, skip_special_tokens=True).replace("\ufffd", "").strip() == caption.text
    assert sum(len(c.tokens) for c in ours) > 0  # something was compared


@pytest.mark.slow  # a fresh process or a Java scorer: several seconds
def test_the_export_loads_where_captioner_cannot_be_imported(exported):
    code = (
        "import sys; sys.modules['captioner'] = None\n"  # any `import captioner` now fails
        "import torch\n"
        "from transformers import AutoModelForImageTextToText\n"
        f"m = AutoModelForImageTextToText.from_pretrained({str(exported)!r}, trust_remote_code=True)\n"
        "print(m.generate(pixel_values=torch.zeros(1, 3, 32, 32), max_new_tokens=3).shape[1])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "4"  # BOS + 3 tokens


def test_export_refuses_an_existing_folder_in_one_line(exported, trained_package, capsys):
    assert main(["export-hf", str(trained_package), str(exported)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and "exists; pass --overwrite" in err and "\n" not in err


def test_a_decoder_the_modeling_file_cannot_compute_is_refused_in_one_line(tokenizer, tmp_path, capsys):
    from captioner.config import CaptionerConfig
    from tests.cli.test_errors import one_line_error
    from tests.test_decoder import LLAMA_STYLE

    config = CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, n_layer=2, **LLAMA_STYLE)
    package = Captioner(config).save_pretrained(tmp_path / "pkg", tokenizer)
    assert main(["export-hf", str(package), str(tmp_path / "out")]) == 2
    said = one_line_error(capsys)
    assert "export-hf writes GPT-style decoders" in said and "norm_class_name='RMSNorm'" in said
    assert "cross_attention_every=2" in said and not (tmp_path / "out").exists()
