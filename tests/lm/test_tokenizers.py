"""A language model's own tokenizer (Llama-, Qwen- and Gemma-style, built offline): its BOS/EOS/pad conventions
in encoding, decoding, a package and a vocabulary extension."""

import json

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.package import SPECIAL_FILE, read_package
from captioner.shapes import captions, scene_objects
from captioner.tokenizer import CaptionTokenizer
from tests.lm.checkpoints import save_lm_tokenizer

TEXTS = [c for i in range(200) for c in captions(scene_objects("train", i))]
TEXT = "a small red circle above a large blue square"
# style -> (bos, eos, pad) tokens: Qwen has no BOS (its <|endoftext|> starts), Llama no pad (its </s> pads)
EXPECTED = {
    "llama": ("<s>", "</s>", "</s>"),
    "qwen": ("<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
    "gemma": ("<bos>", "<eos>", "<pad>"),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def lm_tokenizer(request, tmp_path_factory):
    folder = save_lm_tokenizer(tmp_path_factory.mktemp(request.param), request.param, TEXTS)
    return request.param, folder, CaptionTokenizer.from_hf(str(folder))


def ids_of(tok: CaptionTokenizer, tokens: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(tok.tokenizer.token_to_id(t) for t in tokens)


def test_the_conventions_are_the_lm_tokenizers(lm_tokenizer):
    from transformers import AutoTokenizer

    style, folder, tok = lm_tokenizer
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == ids_of(tok, EXPECTED[style])
    ids = tok.encode(TEXT)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.bos_id not in ids[1:-1]  # one start token
    hf = AutoTokenizer.from_pretrained(folder)
    assert ids[1:-1] == hf(TEXT, add_special_tokens=False).input_ids
    if style != "qwen":  # the LM's post-processor would have added its BOS: encode keeps it to one
        assert hf(TEXT).input_ids[0] == tok.bos_id
    assert tok.decode(ids) == TEXT
    assert tok.decode([*ids, tok.pad_id, *tok.encode("junk")]) == TEXT  # stops at EOS
    assert tok.lengths([TEXT]) == [len(ids)]


def test_a_package_keeps_the_ids_and_so_does_extend(lm_tokenizer, tmp_path):
    _, _, tok = lm_tokenizer
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tok.vocab_size))
    package = model.save_pretrained(tmp_path / "pkg", tok)
    assert json.loads((package / SPECIAL_FILE).read_text()) == tok.special
    _, again = Captioner.from_pretrained(package)
    assert again.special == read_package(package).tokenizer.special == tok.special
    assert again.encode(TEXT) == tok.encode(TEXT)
    extended = tok.extend(["zebra zebra zebra quokka quokka quokka"] * 4, 4)
    assert extended.vocab_size > tok.vocab_size and extended.special == tok.special
    old = tok.tokenizer.id_to_token
    assert all(extended.tokenizer.id_to_token(i) == old(i) for i in range(tok.vocab_size))  # Qwen's added tokens too
    new = "zebra quokka"
    assert len(extended.encode(new)) < len(tok.encode(new)) and extended.decode(extended.encode(new)) == new


def test_a_package_without_the_record_loads_as_before(tokenizer, tmp_path):
    torch.manual_seed(0)
    package = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        tmp_path / "pkg", tokenizer
    )
    (package / SPECIAL_FILE).unlink()  # as written before the ids were recorded
    assert read_package(package).tokenizer.special == CaptionTokenizer(tokenizer.tokenizer).special
    assert tokenizer.special == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


@pytest.mark.parametrize(
    ("record", "said"),
    [
        ('{"bos_token_id": 1}', "give a JSON object of exactly bos_token_id, eos_token_id, pad_token_id"),
        ('{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 9999}', "pad_token_id=9999 is not a token id"),
        ("[1, 2, 0]", r"special token ids \[1, 2, 0\]: give a JSON object"),
        ("{oops", "special_tokens.json a package holds"),
    ],
)
def test_a_broken_record_is_named(record, said, tokenizer, tmp_path):
    torch.manual_seed(0)
    package = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size)).save_pretrained(
        tmp_path / "pkg", tokenizer
    )
    (package / SPECIAL_FILE).write_text(record)
    with pytest.raises(ValueError, match=said):
        read_package(package)


@pytest.mark.slow  # a 2-step training: 2-3 s alone, more on a shared machine
def test_fit_from_a_qwen_start_carries_its_tokenizer_into_the_package(tmp_path):
    from captioner.cli import main
    from tests.helpers import ROOT
    from tests.lm.checkpoints import save_lm
    from tests.lm.test_bad_input import TINY_RUN

    folder = save_lm_tokenizer(save_lm(tmp_path / "qwen", "qwen2", 320), "qwen", TEXTS)  # vocab padded above 304
    runs = tmp_path / "runs"
    args = [
        *TINY_RUN,
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=1",
        f"--model.config.decoder_init_from={folder}",
    ]
    args += ["--data.init_args.captions.truncate=true", f"--trainer.logger.init_args.save_dir={runs}"]
    assert main(["fit", "--config", str(ROOT / "configs/shapes.yaml"), *args]) == 0
    package = next(runs.glob("shapes/version_*/model"))
    model, tok = Captioner.from_pretrained(package)
    lm = CaptionTokenizer.from_hf(str(folder))
    assert tok.special == lm.special and tok.bos_id == tok.tokenizer.token_to_id("<|endoftext|>")
    assert model.config.vocab_size == 320 and tok.vocab_size == lm.vocab_size < 320
