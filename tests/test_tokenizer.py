import pytest

from captioner.tokenizer import CaptionTokenizer

TEXTS = [
    "a small red circle and a large blue square",
    "Crème brûlée on a café table, naïve façade",
    "一只猫坐在垫子上",
    "a dog 🐕 chasing a ball ⚽ at sunset 🌅",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_any_utf8(tokenizer: CaptionTokenizer, text: str):
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    assert tokenizer.decode(ids) == text


def test_merges_shorten_frequent_words(tokenizer: CaptionTokenizer):
    text = "a small red circle"
    assert len(tokenizer.encode(text)) - 2 < len(text.encode()) // 2
    assert tokenizer.vocab_size == 300


def test_truncation_keeps_eos(tokenizer: CaptionTokenizer):
    ids = tokenizer.encode("a small red circle, a large blue square and a small green cross", max_length=6)
    assert len(ids) == 6 and ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id


def test_decode_stops_at_eos_and_skips_padding(tokenizer: CaptionTokenizer):
    ids = tokenizer.encode("a small red circle")
    assert tokenizer.decode([*ids, tokenizer.pad_id, *tokenizer.encode("junk")]) == "a small red circle"


def test_save_load(tokenizer: CaptionTokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    again = CaptionTokenizer.load(tmp_path / "tokenizer.json")
    assert again.encode(TEXTS[2]) == tokenizer.encode(TEXTS[2])
    assert (again.pad_id, again.bos_id, again.eos_id) == (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CaptionTokenizer.load(tmp_path / "nope.json")
