"""Byte-level BPE tokenizer (Hugging Face `tokenizers`), trained on the training captions.

Byte-level means every UTF-8 string is encodable (accents, CJK, emoji) and decodes back exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
IGNORE_INDEX = -100
MAX_TRAIN_CHARS = 1000  # longer captions are cut to this for training the BPE (a 1 MB caption took minutes)
log = logging.getLogger(__name__)  # label of positions without a loss (padding); PyTorch's cross-entropy default
SPECIAL_TOKENS = [PAD, BOS, EOS]


class CaptionTokenizer:
    """Wraps a `tokenizers.Tokenizer`; adds BOS/EOS, truncation and padding for captions."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        """Special tokens: ours (<pad>, <bos>, <eos>) when present; else a tokenizer with exactly one special token
        (GPT-2's <|endoftext|>) uses it as BOS, EOS and padding, as GPT-2 does."""
        self.tokenizer = tokenizer
        ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        if all(i is not None for i in ids.values()):
            self.pad_id, self.bos_id, self.eos_id = ids[PAD], ids[BOS], ids[EOS]
            return
        specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special]
        if len(specials) != 1:
            raise ValueError(
                f"tokenizer has special tokens {specials}; expected <pad>, <bos>, <eos> (train one with "
                "`CaptionTokenizer.train`) or a single end-of-text token (GPT-2)"
            )
        self.pad_id = self.bos_id = self.eos_id = tokenizer.token_to_id(specials[0])

    @classmethod
    def from_hf(cls, name_or_path: str) -> CaptionTokenizer:
        """A Hugging Face fast tokenizer (`AutoTokenizer`, hub name or local folder), e.g. GPT-2's."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(name_or_path).backend_tokenizer)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2) -> CaptionTokenizer:
        """Train a byte-level BPE on `texts` (the training captions), each cut to `MAX_TRAIN_CHARS` characters
        (BPE training time grows with the square of a text's length; captions are short)."""
        cut = [0]

        def capped() -> Iterable[str]:
            for text in texts:
                if len(text) > MAX_TRAIN_CHARS:
                    cut[0] += 1
                    text = text[:MAX_TRAIN_CHARS]
                yield text

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
        tok.train_from_iterator(capped(), trainer=trainer)
        if cut[0]:
            log.warning("the tokenizer was trained on %d caption(s) cut to %d characters", cut[0], MAX_TRAIN_CHARS)
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
        ids = list(ids)
        if ids and ids[0] == self.bos_id:  # BOS may equal EOS (GPT-2)
            ids = ids[1:]
        out: list[int] = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(int(i))
        return self.tokenizer.decode(out, skip_special_tokens=True)
