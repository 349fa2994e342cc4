"""A language-model start the user got wrong, through `captioner fit`: one line `captioner: error: ...`, exit 2."""

import shutil

import pytest
import torch

from captioner.cli import main
from captioner.config import CaptionerConfig
from captioner.model import Captioner
from tests.helpers import ROOT
from tests.lm.checkpoints import save_lm

TINY_RUN = [
    "--model.config.encoder_img_size=32",
    "--model.config.encoder_kwargs={embed_dim: 32, depth: 1, num_heads: 2}",
    "--data.init_args.train_size=8",
    "--data.init_args.val_size=8",
    "--data.init_args.batch_size=8",
    "--data.init_args.num_workers=0",
    "--trainer.max_steps=1",
]


def fit_fails(capsys, folder, *args: str) -> str:
    """`captioner fit` from the LM in `folder`: exit 2 and the one line it printed."""
    argv = ["fit", "--config", str(ROOT / "configs/shapes.yaml"), *TINY_RUN]
    capsys.readouterr()  # what saving the checkpoint printed
    assert main([*argv, f"--model.config.decoder_init_from={folder}", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("captioner: error: "), err
    return err[0]


def with_tokenizer(folder, tokenizer):
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer, bos_token="<bos>", eos_token="<eos>").save_pretrained(
        folder
    )
    return folder


def test_an_unsupported_family(tmp_path, tokenizer, capsys):
    from transformers import OPTConfig

    OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2).save_pretrained(tmp_path)
    said = fit_fails(capsys, with_tokenizer(tmp_path, tokenizer))
    assert (
        "is a 'opt' model; the supported language models are gemma, gemma2, gpt2, llama, mistral, qwen2, qwen3, smollm3"
        in said
    )


def test_only_pickled_weights(llama_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    shutil.copytree(llama_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert ".bin weights need arbitrary unpickling (which could run code) and were refused" in fit_fails(capsys, folder)


def test_a_tokenizer_beyond_the_checkpoints_vocabulary(tmp_path, tokenizer, capsys):
    folder = with_tokenizer(save_lm(tmp_path, "qwen2", tokenizer.vocab_size - 20), tokenizer)
    said = fit_fails(capsys, folder)
    assert "tokens, beyond the 280 token embeddings of config.decoder_init_from=" in said


def test_a_vocabulary_padded_above_the_tokenizer_is_fine(tmp_path, tokenizer):
    from captioner.train.cli import trainer_cli

    folder = with_tokenizer(save_lm(tmp_path / "lm", "qwen2", tokenizer.vocab_size + 20), tokenizer)
    args = ["--config", str(ROOT / "configs/shapes.yaml"), *TINY_RUN, f"--model.config.decoder_init_from={folder}"]
    cli = trainer_cli([*args, f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    model, tok = cli.model.built()
    assert model.config.vocab_size == 320 and tok.vocab_size < 310
    _, again = Captioner.from_pretrained(model.save_pretrained(tmp_path / "pkg", tok))
    assert again.special == tok.special


def test_no_tokenizer_in_the_folder(tmp_path, capsys):
    said = fit_fails(capsys, save_lm(tmp_path, "llama", 300))
    assert "its tokenizer could not be read" in said and "model.tokenizer.path" in said


@pytest.mark.parametrize("every", ["9", "[1, 7]"])
def test_cross_attention_beyond_the_layers(llama_dir, every, capsys):
    said = fit_fails(capsys, llama_dir, f"--model.config.cross_attention_every={every}")
    assert f"cross_attention_every={every.replace(' ', '')}".replace(",", ", ") in said and "n_layer=4" in said


def test_a_tokenizer_path_that_is_not_the_lms_own(llama_dir, tmp_path, capsys):
    """A smaller tokenizer fits the embedding rows, and its ids would index rows trained for other tokens."""
    from captioner.shapes import captions, scene_objects
    from captioner.tokenizer import CaptionTokenizer

    other = CaptionTokenizer.train([c for i in range(50) for c in captions(scene_objects("train", i))], 100)
    other.save(tmp_path / "other.json")
    said = fit_fails(capsys, llama_dir, f"--model.tokenizer.path={tmp_path / 'other.json'}")
    assert "is not the tokenizer of decoder_init_from=" in said and "unset tokenizer.path" in said


def test_freeze_lm_with_extend_is_refused(llama_dir, capsys):
    said = fit_fails(capsys, llama_dir, "--model.finetune.freeze_lm=true", "--model.tokenizer.extend=8")
    assert "finetune.freeze_lm freezes the token embeddings" in said


def test_extend_into_a_padded_vocabulary_starts_from_the_pieces(tmp_path, tokenizer):
    """New tokens that land in a padded checkpoint's spare rows (Qwen's) start as the mean of their pieces' rows."""
    from captioner.train import Finetuning
    from captioner.train.build import build_model

    folder = with_tokenizer(save_lm(tmp_path / "lm", "qwen2", tokenizer.vocab_size + 20), tokenizer)
    lm = Captioner(CaptionerConfig(decoder_init_from=str(folder), **TINY_ENCODER)).decoder.wte.weight.detach()
    extended = tokenizer.extend(["a crimsonish teal rhombusoid beside quadrilateralish zigzags"] * 50, 4)
    base = tokenizer.vocab_size
    assert extended.vocab_size > base
    torch.manual_seed(0)
    model = build_model(CaptionerConfig(decoder_init_from=str(folder), **TINY_ENCODER), extended, None, Finetuning(), 4)
    rows = model.decoder.wte.weight.detach()
    assert rows.size(0) == base + 20  # no row appended: the spare rows hold the new tokens
    for i, parts in extended.pieces(base).items():
        assert torch.allclose(rows[i], lm[parts].mean(0)) and not torch.allclose(rows[i], lm[i])
    assert torch.equal(rows[:base], lm[:base]) and torch.equal(rows[extended.vocab_size :], lm[extended.vocab_size :])


TINY_ENCODER = {
    "encoder_img_size": 32,
    "encoder_patch_size": 16,
    "encoder_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2},
}
