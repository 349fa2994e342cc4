"""Fine-tuning on captions the package's tokenizer has never seen (issue 14): no silent truncation, the vocabulary
and the block size grow, and what the model knew is computed exactly as before."""

import copy
import json

import pytest
import torch

from captioner.cli import main
from captioner.model import Captioner
from captioner.train.build import grow_positions, grow_vocab
from tests.cli.test_errors import one_line_error
from tests.helpers import ROOT
from tests.test_tokenizer import GREEK


def test_a_grown_vocabulary_leaves_the_old_logits_exactly_as_they_were(tiny_model, tokenizer, images):
    extended = tokenizer.extend(GREEK * 20, 40)
    V = tokenizer.vocab_size
    grown = copy.deepcopy(tiny_model)
    grow_vocab(grown, extended.pieces(V))
    ids = torch.tensor([tokenizer.encode("a small red circle")])
    with torch.no_grad():
        before, after = tiny_model(images[:1], ids), grown(images[:1], ids)  # (1, T, V), (1, T, V + N)
    assert after.shape[-1] == extended.vocab_size == grown.config.vocab_size
    assert torch.equal(after[..., :V], before)
    wte = grown.decoder.wte.weight
    assert grown.decoder.lm_head.weight is wte  # still tied
    for i, parts in extended.pieces(V).items():  # a new token starts as the mean of its pieces
        assert torch.allclose(wte[i], tiny_model.decoder.wte.weight[parts].mean(0))


def test_grown_positions_leave_a_caption_that_fitted_as_it_was(tiny_model, tokenizer, images):
    grown = copy.deepcopy(tiny_model)
    T = tiny_model.config.block_size
    grow_positions(grown, T + 24)
    assert grown.config.block_size == T + 24 and grown.decoder.wpe.weight.shape[0] == T + 24
    ids = torch.tensor([tokenizer.encode("a small red circle")])
    with torch.no_grad():
        assert torch.equal(grown(images[:1], ids), tiny_model(images[:1], ids))
    assert torch.equal(grown.decoder.wpe.weight[-1], tiny_model.decoder.wpe.weight[-1])  # new rows: the last one
    with pytest.raises(ValueError, match="can only grow"):
        grow_positions(grown, T)


def test_an_untied_rope_decoder_grows_too(tokenizer, images):
    from captioner.config import CaptionerConfig
    from tests.test_decoder import LLAMA_STYLE

    torch.manual_seed(0)
    model = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, n_layer=2, **LLAMA_STYLE))
    grown = copy.deepcopy(model)
    extended, V = tokenizer.extend(GREEK * 20, 40), tokenizer.vocab_size
    grow_vocab(grown, extended.pieces(V))
    grow_positions(grown, model.config.block_size + 8)
    head = grown.decoder.lm_head.weight
    assert head is not grown.decoder.wte.weight and head.shape[0] == extended.vocab_size  # untied, grown
    for i, parts in extended.pieces(V).items():
        assert torch.allclose(head[i], model.decoder.lm_head.weight[parts].mean(0))
    assert grown.decoder.rope.cos.shape[0] == model.config.block_size + 8
    ids = torch.tensor([tokenizer.encode("a small red circle")])
    with torch.no_grad():
        assert torch.equal(grown(images[:1], ids)[..., :V], model(images[:1], ids))


@pytest.fixture
def greek_folder(shapes_folder):
    """The 12 shapes images captioned in Greek: under the package's English BPE each caption needs over 40 tokens."""
    rows = [json.loads(line) for line in (shapes_folder / "metadata.jsonl").read_text().splitlines()]
    lines = [
        json.dumps({"file_name": r["file_name"], "text": [GREEK[i % 3], GREEK[(i + 1) % 3]]})
        for i, r in enumerate(rows)
    ]
    (shapes_folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return shapes_folder


def finetune(package, folder, runs, *extra) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs/finetune.yaml"),
        f"--model.init_from={package}",
        f"--data.init_args.train={folder}",
        "--data.init_args.split.val_fraction=0.25",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={runs}",
        *extra,
    ]


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_captions_that_would_be_cut_are_refused_with_the_numbers_and_the_choices(
    trained_package, greek_folder, tmp_path, capsys
):
    assert main(finetune(trained_package, greek_folder, tmp_path / "runs")) == 2
    said = one_line_error(capsys)
    assert (
        "of 18 training captions (100.0%, more than captions.max_truncated=1%) need more than captions.max_length=40"
        in said
    )
    for choice in (
        "data.init_args.captions.max_length",
        "model.finetune.block_size",
        "model.tokenizer.extend",
        "captions.truncate: true",
    ):
        assert choice in said
    assert (
        main(finetune(trained_package, greek_folder, tmp_path / "runs", "--data.init_args.captions.truncate=true")) == 0
    )


def test_extend_vocab_and_block_size_fine_tune_and_export_the_grown_package(trained_package, greek_folder, tmp_path):
    runs = tmp_path / "runs"
    args = finetune(
        trained_package,
        greek_folder,
        runs,
        "--model.tokenizer.extend=64",
        "--model.finetune.block_size=64",
        "--data.init_args.captions.max_length=64",
    )
    assert main(args) == 0
    model, tok = Captioner.from_pretrained(next(runs.glob("finetune/version_*/model")))
    _, old = Captioner.from_pretrained(trained_package)
    assert old.vocab_size < tok.vocab_size == model.config.vocab_size <= old.vocab_size + 64
    assert model.config.block_size == 64
    assert all(len(tok.encode(t)) < len(old.encode(t)) / 2 for t in GREEK)
    assert tok.encode("a small red circle") == old.encode("a small red circle")
