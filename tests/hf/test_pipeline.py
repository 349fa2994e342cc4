"""transformers' own `pipeline("image-text-to-text")` on an export-hf folder gives `captioner caption`'s captions."""

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.cli import main
from captioner.inference import caption
from captioner.model import Captioner
from captioner.shapes.scenes import make_scene

SCENES = 20


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    """PNG files of 20 shapes test scenes: both sides read the same files."""
    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for i in range(SCENES):
        make_scene("test", i).image.save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


@pytest.fixture(scope="module")
def noise_files(tmp_path_factory):
    """PNG files of 20 images of random pixels."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i in range(SCENES):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return [str(folder / f"{i}.png") for i in range(SCENES)]


@pytest.fixture(scope="module")
def varied(tokenizer, tmp_path_factory):
    """A random tiny package with peaked weights and open gates: on random pixels its captions differ from image
    to image (the 4-step trained package says one caption of every scene), so a batch's order counts."""
    torch.manual_seed(0)
    from captioner.config import CaptionerConfig

    model = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, cross_gate=True)).eval()
    with torch.no_grad():
        for name, p in model.decoder.named_parameters():
            p.copy_(torch.full_like(p, 0.7) if "gate" in name else p * 4 if p.ndim > 1 else p)
        for p in model.encoder.parameters():
            p.mul_(4 if p.ndim > 1 else 1)
    package = model.save_pretrained(tmp_path_factory.mktemp("varied") / "pkg", tokenizer)
    out = package.parent / "hf"
    assert main(["export-hf", str(package), str(out)]) == 0
    return package, out


def image_text_to_text(folder):
    from transformers import pipeline

    return pipeline("image-text-to-text", model=str(folder), trust_remote_code=True)


@pytest.mark.slow  # transformers' pipeline machinery loads in seconds
@pytest.mark.parametrize("which", ["trained", "varied"])
def test_the_pipeline_gives_captioner_captions(which, exported, trained_package, varied, scene_files, noise_files):
    package, folder = (trained_package, exported) if which == "trained" else varied
    files = scene_files if which == "trained" else noise_files
    ours = [c.text for c in caption(files, package)]  # `captioner caption`: greedy
    pipe = image_text_to_text(folder)
    assert pipe(images=files[0], text="") == [{"input_text": "", "generated_text": ours[0]}]
    assert [r["generated_text"] for r in pipe(images=files, text="")] == ours  # one batch of 20
    if which == "varied":
        assert len(set(ours)) >= 5  # the captions depend on the image


def test_a_prompt_is_continued_and_prompts_of_two_lengths_are_refused(varied, scene_files):
    pipe = image_text_to_text(varied[1])
    full = pipe(images=scene_files[0], text="a red")[0]["generated_text"]
    new = pipe(images=scene_files[0], text="a red", return_full_text=False)[0]["generated_text"]
    assert full == "a red" + new and new
    with pytest.raises(ValueError, match="different token lengths"):
        pipe.processor(images=[make_scene("test", 0).image] * 2, text=["a", "a red square"])
