"""The tokenizer of a run is resolved once, from one source, and handed down: the model is sized from it and the
data receives it through `connect` (one test per source); the data never decides it."""

from __future__ import annotations

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.train import TokenizerSource, connect
from captioner.train.cli import trainer_cli
from tests.helpers import ROOT, TINY_MODEL, TINY_SHAPES_DATA, tiny_module, tiny_shapes


def joined(module, data) -> None:
    """Connected: the data holds the module's tokenizer, and the model's vocabulary is its size."""
    connect(module, data)
    assert data.tokenizer is module.tokenizer
    assert module.model.config.vocab_size == module.tokenizer.vocab_size
    assert module.model.decoder.wte.weight.shape[0] == module.tokenizer.vocab_size


@pytest.fixture
def package(tmp_path, tokenizer, tiny_config):
    torch.manual_seed(0)
    folder = tmp_path / "package"
    Captioner(tiny_config).save_pretrained(folder, tokenizer)
    return folder


def test_trained_on_the_training_captions():
    module = tiny_module(tokenizer=TokenizerSource(vocab_size=280, train_captions=400))
    data = tiny_shapes(16)
    joined(module, data)
    assert module.tokenizer.vocab_size <= 280


def test_a_tokenizer_file(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "tokenizer.json")
    module, data = tiny_module(tokenizer=TokenizerSource(path=str(tmp_path / "tokenizer.json"))), tiny_shapes(16)
    joined(module, data)
    assert module.tokenizer.encode("a small red circle") == tokenizer.encode("a small red circle")


def test_the_packages_own(package, tokenizer):
    from captioner.train import CaptionerModule

    module, data = CaptionerModule(init_from=str(package)), tiny_shapes(16)
    joined(module, data)
    assert module.tokenizer.vocab_size == tokenizer.vocab_size


def test_the_language_models_own(gpt2_dir, tokenizer):
    config = CaptionerConfig.from_name("tiny", decoder_init_from=str(gpt2_dir), n_embd=64, n_head=4, n_layer=2)
    module, data = tiny_module(config), tiny_shapes(16)
    joined(module, data)
    assert module.tokenizer.vocab_size == tokenizer.vocab_size  # the saved GPT-2's tokenizer


def test_a_packages_tokenizer_extended_grows_the_embeddings(package, tokenizer):
    from captioner.train import CaptionerModule

    module = CaptionerModule(init_from=str(package), tokenizer=TokenizerSource(extend=16))
    data = tiny_shapes(16)  # shapes words the 300-token BPE of the package splits: new tokens are learned
    joined(module, data)
    assert tokenizer.vocab_size < module.tokenizer.vocab_size <= tokenizer.vocab_size + 16


def test_conflicting_sources_are_refused(package, tmp_path, tokenizer):
    from captioner.train import CaptionerModule

    tokenizer.save(tmp_path / "tokenizer.json")
    both = CaptionerModule(init_from=str(package), tokenizer=TokenizerSource(path=str(tmp_path / "tokenizer.json")))
    with pytest.raises(ValueError, match="a package brings its own tokenizer"):
        connect(both, tiny_shapes(16))
    with pytest.raises(ValueError, match="tokenizer.extend=8 adds tokens to a package's"):
        connect(tiny_module(tokenizer=TokenizerSource(extend=8)), tiny_shapes(16))


def test_the_cli_hands_one_tokenizer_to_both_and_links_nothing(tmp_path):
    args = ["--config", str(ROOT / "configs/shapes.yaml"), *TINY_MODEL, *TINY_SHAPES_DATA]
    cli = trainer_cli([*args, f"--trainer.logger.init_args.save_dir={tmp_path}"], run=False)
    assert cli.datamodule.tokenizer is cli.model.tokenizer
    assert cli.model.model.config.vocab_size == cli.model.tokenizer.vocab_size
    assert not hasattr(cli.parser, "_links_group")  # jsonargparse's group of linked arguments: none
    assert not hasattr(cli.datamodule, "vocab_size")  # nothing for a link to read


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("--model.lr=0.01", "model.optimizer.lr"),
        ("--model.extend_vocab=8", "model.tokenizer.extend"),
        ("--data.init_args.vocab_size=300", "model.tokenizer.vocab_size"),
        ("--data.init_args.max_length=30", "data.init_args.captions.max_length"),
        ("--model.finetune=freeze_encoder", "model.finetune.policy"),
    ],
)
def test_an_old_flat_key_is_one_line_naming_its_new_place(old, new, capsys):
    from captioner.cli import main

    assert main(["fit", "--config", str(ROOT / "configs/shapes.yaml"), old]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and "\n" not in err
    assert f"{old[2:].split('=')[0]} is now {new}" in err


def test_an_old_key_in_a_config_file_is_named_with_the_file(tmp_path, capsys):
    from captioner.cli import main

    old = tmp_path / "old.yaml"
    data = "data:\n  class_path: captioner.shapes.ShapesDataModule\n  init_args:\n    vocab_size: 300\n"
    old.write_text("model:\n  lr: 0.01\n" + data)
    assert main(["fit", "--config", str(old)]) == 2
    err = capsys.readouterr().err
    assert f"model.lr is now model.optimizer.lr ({old})" in err
    assert f"data.init_args.vocab_size is now model.tokenizer.vocab_size ({old})" in err
