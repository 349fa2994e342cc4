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


GREEK = ["ένας μικρός κόκκινος κύκλος", "ένα μεγάλο μπλε τετράγωνο και ένας μικρός κύκλος", "δύο σχήματα: ένας κύκλος"]


def test_decode_never_returns_a_broken_character(tokenizer: CaptionTokenizer):
    ids = tokenizer.encode("café 猫")[1:-1]  # without BOS/EOS
    texts = [tokenizer.decode(ids[:n]) for n in range(len(ids) + 1)]  # cut after every token
    assert all("\ufffd" not in t for t in texts)
    assert texts[-1] == "café 猫"
    assert all("café 猫".startswith(t) for t in texts)  # a cut character is dropped, the rest kept


def test_extend_keeps_every_id_and_shortens_the_new_language(tokenizer: CaptionTokenizer):
    extended = tokenizer.extend(GREEK * 20, 40)
    V = tokenizer.vocab_size
    assert V < extended.vocab_size <= V + 40
    for i in range(V):
        assert extended.tokenizer.id_to_token(i) == tokenizer.tokenizer.id_to_token(i)
    english = "a small red circle and a large blue square"
    assert extended.encode(english) == tokenizer.encode(english)
    for text in GREEK:
        assert len(extended.encode(text)) < len(tokenizer.encode(text)) / 2
        assert extended.decode(extended.encode(text)) == text
    pieces = extended.pieces(V)
    assert sorted(pieces) == list(range(V, extended.vocab_size))
    for i, parts in pieces.items():  # each new token spells exactly the old tokens it replaces
        assert all(p < V for p in parts) and len(parts) >= 2
        assert "".join(tokenizer.tokenizer.id_to_token(p) for p in parts) == extended.tokenizer.id_to_token(i)


def test_lengths_are_the_encoded_lengths(tokenizer: CaptionTokenizer):
    texts = ["a small red circle", "", *GREEK]
    assert tokenizer.lengths(texts) == [len(tokenizer.encode(t)) for t in texts]
