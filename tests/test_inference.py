"""The captioning core and the public face: `captioner.caption(...)` in one call gives what `captioner caption`
writes; every path that captions goes through `caption_batch`."""

import contextlib
import json

import pytest
import torch
from PIL import Image

import captioner
from captioner.cli import main
from captioner.generate import GenerationConfig, generate
from captioner.inference import caption_batch
from captioner.shapes import make_scene


def test_caption_in_one_call_equals_the_command(trained_package, tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        make_scene("test", i).image.save(files[-1])
    out = tmp_path / "rows.jsonl"
    assert main(["caption", str(trained_package), *map(str, files), "-o", str(out), "--workers", "0"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    from_files = captioner.caption([str(f) for f in files], model=str(trained_package))
    with contextlib.ExitStack() as stack:
        from_pil = captioner.caption([stack.enter_context(Image.open(f)) for f in files], model=trained_package)
    assert [c.text for c in from_files] == [c.text for c in from_pil] == [r["caption"] for r in rows]
    assert [round(c.score, 4) for c in from_files] == [r["score"] for r in rows]


def test_caption_with_a_loaded_model_and_n_best(trained_package):
    model, tokenizer = captioner.Captioner.from_pretrained(trained_package)
    gen = captioner.GenerationConfig(num_beams=3, num_return_sequences=2)
    (cap,) = captioner.caption([make_scene("test", 0).image], model=model, tokenizer=tokenizer, generation=gen)
    assert len(cap.n_best) == 2 and cap.n_best[0] == (cap.text, cap.score)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        captioner.caption([make_scene("test", 0).image], model=model)


def test_caption_batch_decodes_generate(tiny_model, tokenizer, images):
    gen = GenerationConfig(max_new_tokens=6)
    captions = caption_batch(tiny_model.eval(), tokenizer, images, gen)
    hyps = generate(tiny_model, images, tokenizer, gen)
    assert [c.tokens for c in captions] == [h[0].tokens for h in hyps]
    assert [c.text for c in captions] == [tokenizer.decode(h[0].tokens) for h in hyps]
    with torch.inference_mode():
        memory = tiny_model.encode(images)
    assert [c.text for c in caption_batch(tiny_model, tokenizer, generation=gen, memory=memory)] == [
        c.text for c in captions
    ]


def test_truncated_captions_are_marked_in_rows_and_counted(trained_package, tmp_path, capsys):
    from captioner.cli import main
    from captioner.shapes import make_scene

    for i in range(2):
        make_scene("test", i).image.save(tmp_path / f"{i}.png")
    out = tmp_path / "out.jsonl"
    args = [
        "caption",
        str(trained_package),
        str(tmp_path / "0.png"),
        str(tmp_path / "1.png"),
        "-o",
        str(out),
        "--max-new-tokens",
        "2",
        "--min-new-tokens",
        "2",
        "--workers",
        "0",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["truncated"] is True for r in rows)
    assert "captioned 2 (2 cut by the token limit)" in capsys.readouterr().err
