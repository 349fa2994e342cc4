"""`captioner export-hf`: transformers' Auto classes load the folder, and its generate() gives our captions."""

import ast
import inspect
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
from tests.test_decoder import LLAMA_STYLE


def test_the_folder_holds_what_transformers_reads(exported, trained_package):
    names = {p.name for p in exported.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "configuration_captioner.py",
        "modeling_captioner.py",
        "decoder_captioner.py",
        "processing_captioner.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "generation_config.json",
        "processor_config.json",
    } <= names
    assert len([n for n in names if n.endswith("_captioner.py")]) == 4
    assert json.loads((exported / "config.json").read_text())["auto_map"]["AutoModelForImageTextToText"] == (
        "modeling_captioner.CaptionerForConditionalGeneration"
    )
    package = json.loads((trained_package / "config.json").read_text())
    assert package["encoder_conv_stem"]  # the demo config's conv stem travels (and generate below runs through it)
    assert json.loads((exported / "config.json").read_text())["encoder_conv_stem"] == package["encoder_conv_stem"]
    assert json.loads((exported / "processor_config.json").read_text())["auto_map"]["AutoProcessor"] == (
        "processing_captioner.CaptionerProcessor"
    )
    for code in sorted(n for n in names if n.endswith("_captioner.py")):  # the code files: no captioner import
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
        "from PIL import Image\n"  # and the processor transformers' image-text-to-text pipeline loads
        "from transformers import pipeline\n"
        f"pipe = pipeline('image-text-to-text', model={str(exported)!r}, trust_remote_code=True)\n"
        "print(type(pipe(images=Image.new('RGB', (64, 64)), text='')[0]['generated_text']).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-2:] == ["4", "str"]  # BOS + 3 tokens; a caption


def test_export_refuses_an_existing_folder_in_one_line(exported, trained_package, capsys):
    assert main(["export-hf", str(trained_package), str(exported)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and "exists; pass --overwrite" in err and "\n" not in err


# every block option the exported modeling file must compute as captioner does: a Llama-style decoder (RMSNorm,
# RoPE, SwiGLU, 2 key/value heads for 4 query heads, untied head, cross-attention and a cross MLP in the second of
# two blocks, open gates), and the options of the other families (Gemma's 1 + w norm, GeGLU, scaled embeddings,
# soft-capping; Gemma 2's soft-capped attention, score scale and post norms; Qwen's q/k bias and norm; Llama 3's
# rope scaling; a block without RoPE as SmolLM3's)
LLAMA3_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
BLOCKS = {
    "llama": {**LLAMA_STYLE, "cross_gate": True},
    "others": {
        **LLAMA_STYLE,
        "cross_gate": True,
        "cross_attention_every": [0, 1],
        "norm_add_unit_offset": True,
        "mlp_class_name": "GemmaMLP",
        "gelu_approximate": "tanh",
        "scale_embeddings": True,
        "final_logit_softcapping": 30.0,
        "attn_bias": True,
        "bias": False,
        "norm_qk": True,
        "rope_base": 5000.0,
        "rope_adjustments": {**LLAMA3_ROPE, "original_max_seq_len": 8.0},
        "rope_layers": [0],
        "attention_logit_softcapping": 2.0,  # Gemma 2's attention: soft-capped scores, its own scale, post norms
        "attention_scores_scalar": 8,
        "post_attention_norm": True,
        "post_mlp_norm": True,
        # a SigLIP-style encoder: no class token, an attention-pooling head that neither side keeps
        "encoder_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "global_pool": "map", "class_token": False},
    },
}


@pytest.mark.parametrize("style", sorted(BLOCKS))
def test_the_export_of_every_block_option_generates_caption_batchs_tokens(style, tokenizer, tmp_path, images):
    from transformers import AutoModelForImageTextToText

    from captioner.config import LM_FIELDS, CaptionerConfig
    from captioner.hf.configuration_captioner import CaptionerConfig as RemoteConfig

    torch.manual_seed(0)
    config = CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, n_layer=2, **BLOCKS[style])
    model = Captioner(config).eval()
    with torch.no_grad():  # open gates, norms off 1 and peaked outputs: every option changes the tokens
        for name, p in model.decoder.named_parameters():
            p.copy_(torch.full_like(p, 0.7) if "gate" in name else p * 4 if p.ndim > 1 else p + torch.rand_like(p))
    package = model.save_pretrained(tmp_path / "pkg", tokenizer)
    assert main(["export-hf", str(package), str(tmp_path / "out")]) == 0
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    remote = set(inspect.signature(RemoteConfig.__init__).parameters)
    assert set(LM_FIELDS) - {"tie_word_embeddings"} <= remote  # a decoder field the export would drop silently
    for beams in (1, 3):
        ours = caption_batch(model, tokenizer, images, GenerationConfig(num_beams=beams, max_new_tokens=12))
        with torch.inference_mode():
            rows = hf.generate(pixel_values=images, num_beams=beams, max_new_tokens=12).tolist()
        for caption, row in zip(ours, rows, strict=True):
            tokens = row[1:]
            tokens = tokens[: tokens.index(tokenizer.eos_id)] if tokenizer.eos_id in tokens else tokens
            assert tokens == caption.tokens, beams
        assert sum(len(c.tokens) for c in ours) > 2 * len(ours)  # something was compared
    with torch.no_grad():  # and the logits of a whole sequence
        ids = torch.randint(3, tokenizer.vocab_size, (2, 9))
        theirs = hf(pixel_values=images[:2], decoder_input_ids=ids).logits
        assert (theirs - model(images[:2], ids)).abs().max() < 1e-4
