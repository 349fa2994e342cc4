"""Byte-level BPE tokenizer (Hugging Face `tokenizers`), trained on the training captions.

Byte-level means every UTF-8 string is encodable (accents, CJK, emoji) and decodes back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = [PAD, BOS, EOS]


class CaptionTokenizer:
    """Wraps a `tokenizers.Tokenizer`; adds BOS/EOS, truncation and padding for captions."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special token(s) {missing}; train it with `CaptionTokenizer.train`")
        self.pad_id, self.bos_id, self.eos_id = ids[PAD], ids[BOS], ids[EOS]

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2) -> CaptionTokenizer:
        """Train a byte-level BPE on `texts` (the training captions)."""
        tok = Tokenizer(models.BPE())
        # add_prefix_space=False keeps decode(encode(s)) == s exactly
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> CaptionTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """BOS + tokens + EOS, truncated to `max_length` with the EOS kept."""
        ids = [self.bos_id, *self.tokenizer.encode(text).ids, self.eos_id]
        if max_length is not None and len(ids) > max_length:
            ids = [*ids[: max_length - 1], self.eos_id]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; special tokens dropped, stops at the first EOS."""
        out: list[int] = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(int(i))
        return self.tokenizer.decode(out, skip_special_tokens=True)
