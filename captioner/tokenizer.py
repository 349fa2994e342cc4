"""Byte-level BPE tokenizer (Hugging Face `tokenizers`), trained on the training captions.

Byte-level means every UTF-8 string is encodable (accents, CJK, emoji) and decodes back exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
IGNORE_INDEX = -100
MAX_TRAIN_CHARS = 1000  # longer captions are cut to this for training the BPE (a 1 MB caption took minutes)
log = logging.getLogger(__name__)  # label of positions without a loss (padding); PyTorch's cross-entropy default
SPECIAL_TOKENS = [PAD, BOS, EOS]


# a tokenizer's special token ids by transformers' names (`PreTrainedTokenizer.bos_token_id`, ...): what a package
# records of a language model's tokenizer (`captioner.package`)
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


class CaptionTokenizer:
    """Wraps a `tokenizers.Tokenizer`; adds BOS/EOS, truncation and padding for captions.

    The special tokens of a caption: BOS starts it, EOS ends it, padding fills a batch's shorter rows. Ours are
    <bos>, <eos>, <pad>; a language model's tokenizer (`from_hf`) brings its own conventions, read from transformers'
    tokenizer, never guessed from token names:

    - BOS: its bos token (Llama's <s>, Gemma's <bos>); without one (Qwen) its eos token, <|endoftext|>, the separator
      a base LM saw before every document;
    - EOS: its eos token;
    - padding: its pad token, else its eos token (padded positions carry no loss: any id serves).
    """

    def __init__(self, tokenizer: Tokenizer, special: dict[str, int] | None = None) -> None:
        """`special`: the ids by `SPECIAL_IDS` name (a language model's conventions, `from_hf`). Without it: ours
        (<pad>, <bos>, <eos>) when present; else a tokenizer with exactly one special token (GPT-2's
        <|endoftext|>) uses it as BOS, EOS and padding, as GPT-2 does."""
        self.tokenizer = tokenizer
        self.extended_from: int | None = None  # the size before `extend` added tokens (set by `extend`)
        self._special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}  # never decoded
        if special is not None:
            self.bos_id, self.eos_id, self.pad_id = _checked(special, tokenizer.get_vocab_size())
            return
        pad, bos, eos = (tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS)
        if pad is not None and bos is not None and eos is not None:
            self.pad_id, self.bos_id, self.eos_id = pad, bos, eos
            return
        specials = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        if len(specials) != 1:
            raise ValueError(
                f"tokenizer has special tokens {list(specials)}; expected <pad>, <bos>, <eos> (train one with "
                "`CaptionTokenizer.train`) or a single end-of-text token (GPT-2)"
            )
        (end,) = specials.values()
        self.pad_id = self.bos_id = self.eos_id = end

    @property
    def special(self) -> dict[str, int]:
        """The BOS, EOS and padding ids by `SPECIAL_IDS` name: what `CaptionTokenizer(tokenizer, special)` takes."""
        return dict(zip(SPECIAL_IDS, (self.bos_id, self.eos_id, self.pad_id), strict=True))

    @classmethod
    def from_hf(cls, name_or_path: str) -> CaptionTokenizer:
        """A Hugging Face fast tokenizer (`AutoTokenizer`, hub name or local folder), e.g. a language model's, with
        its BOS/EOS/pad conventions (see the class); one that names no eos token is read as `CaptionTokenizer(...)`
        reads a bare tokenizer."""
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name_or_path)
        if hf.eos_token_id is None:
            return cls(hf.backend_tokenizer)
        bos = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
        pad = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
        return cls(hf.backend_tokenizer, dict(zip(SPECIAL_IDS, (bos, hf.eos_token_id, pad), strict=True)))

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
    def load(cls, path: str | Path, special: dict[str, int] | None = None) -> CaptionTokenizer:
        """A tokenizer.json file; `special` as in `CaptionTokenizer(...)` (a package's record: `read_package`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        return cls(Tokenizer.from_file(str(path)), special)

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """BOS + tokens + EOS, truncated to `max_length` with the EOS kept. The text is encoded without the
        tokenizer's own special tokens: a language model's post-processor (Llama's prepends <s>) adds none."""
        ids = [self.bos_id, *self.tokenizer.encode(text, add_special_tokens=False).ids, self.eos_id]
        if max_length is not None and len(ids) > max_length:
            ids = [*ids[: max_length - 1], self.eos_id]
        return ids

    def lengths(self, texts: list[str]) -> list[int]:
        """The length of `encode(text)` for each text (BOS and EOS included), batched."""
        return [len(e.ids) + 2 for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; special tokens dropped, stops at the first EOS. Never a broken character: byte-level
        tokens are joined as bytes and an incomplete or invalid UTF-8 sequence (a caption cut mid-character, or a
        model's stray byte) is dropped, where the tokenizer's own decoder would give U+FFFD."""
        ids = list(ids)
        if ids and ids[0] == self.bos_id:  # BOS may equal EOS (GPT-2)
            ids = ids[1:]
        out: list[int] = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(int(i))
        if type(self.tokenizer.decoder).__name__ != "ByteLevel":
            return self.tokenizer.decode(out, skip_special_tokens=True).replace("\ufffd", "")
        data = bytearray()
        for i in out:
            token = "" if i in self._special else self.tokenizer.id_to_token(i) or ""
            if all(ch in _BYTE_OF for ch in token):
                data.extend(_BYTE_OF[ch] for ch in token)
            else:  # an added (non-special) token, stored as plain text
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors="ignore")

    # ---- vocabulary adaptation (fine-tuning on text the tokenizer has not seen) -----------------------------------
    def extend(self, texts: Iterable[str], count: int, min_frequency: int = 2) -> CaptionTokenizer:
        """This tokenizer with up to `count` new tokens learned from `texts` (BPE merges trained on them, appended
        after the existing merges): every existing token keeps its id, and so do BOS, EOS and padding; new ids follow;
        a text made of known merges tokenizes as before unless a new merge joins its pieces. `pieces(base_size)`
        tells which existing tokens a new one stands for (what its embedding starts from)."""
        spec = json.loads(self.tokenizer.to_str())
        model = spec["model"]
        if model.get("type") != "BPE" or not _byte_level(spec.get("pre_tokenizer")):
            raise ValueError("extending needs a byte-level BPE tokenizer (ours, GPT-2's, Qwen's, Llama 3's)")
        fresh = CaptionTokenizer.train(texts, vocab_size=len(model["vocab"]) + count + 256, min_frequency=min_frequency)
        vocab: dict[str, int] = model["vocab"]
        for token in spec.get("added_tokens") or []:  # added after the BPE's vocabulary (Qwen's): held at their ids
            vocab.setdefault(token["content"], token["id"])
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        known, size, added = set(merges), self.vocab_size, 0
        for a, b in (tuple(m) for m in json.loads(fresh.tokenizer.to_str())["model"]["merges"]):
            if added == count:
                break
            if (a, b) in known or a not in vocab or b not in vocab:
                continue
            merges.append((a, b))
            known.add((a, b))
            if a + b not in vocab:
                vocab[a + b] = size + added
                added += 1
        model["merges"] = [list(m) for m in merges]
        log.info(
            "tokenizer extended by %d tokens learned from the training captions (%d -> %d)", added, size, size + added
        )
        extended = CaptionTokenizer(Tokenizer.from_str(json.dumps(spec)), self.special)
        extended.extended_from = size
        return extended

    def pieces(self, base_size: int) -> dict[int, list[int]]:
        """For each token id >= `base_size` (the tokens an `extend` added), the ids below `base_size` it is made of,
        by the merges that built it: what its embedding starts from."""
        first: dict[str, tuple[str, str]] = {}  # token -> the first merge that makes it (merges apply in order)
        for m in json.loads(self.tokenizer.to_str())["model"]["merges"]:
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            first.setdefault(a + b, (a, b))

        vocab = self.tokenizer.get_vocab()  # token -> id, added tokens included
        token_of = {i: token for token, i in vocab.items()}

        def expand(token: str) -> list[int]:
            i = vocab[token]
            if i < base_size:
                return [i]
            return [p for part in first[token] for p in expand(part)]

        return {i: expand(token_of[i]) for i in range(base_size, self.vocab_size)}


def _byte_level(pre_tokenizer: dict[str, Any] | None) -> bool:
    """Whether a tokenizer.json's pre-tokenizer ends in GPT-2's byte-level mapping: ByteLevel itself, or a Sequence
    whose last step it is (Qwen's and Llama 3's split by their own pattern first)."""
    step = pre_tokenizer or {}
    if step.get("type") == "Sequence":
        step = (step.get("pretokenizers") or [{}])[-1]
    return step.get("type") == "ByteLevel"


def _checked(special: dict[str, int], size: int) -> tuple[int, int, int]:
    """(bos, eos, pad) from `special`: every `SPECIAL_IDS` name, each an id of the tokenizer's `size` tokens."""
    if not isinstance(special, dict) or sorted(special) != sorted(SPECIAL_IDS):
        raise ValueError(f"special token ids {special}: give a JSON object of exactly {', '.join(SPECIAL_IDS)}")
    for name, i in special.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < size:
            raise ValueError(f"special token ids: {name}={i!r} is not a token id of this {size}-token tokenizer")
    bos, eos, pad = (special[name] for name in SPECIAL_IDS)
    return bos, eos, pad


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level BPE tokens are written in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


_BYTE_OF = {ch: b for b, ch in _bytes_to_unicode().items()}
