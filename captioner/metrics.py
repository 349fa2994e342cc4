"""Caption metrics as papers report them: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D through pycocoevalcap.

The PTB tokenizer and METEOR run on Java. Without Java the metrics are still computed: a documented pure-Python
tokenizer (`simple_tokenize`) replaces the PTB one and METEOR is skipped, with one warning.

Captions in any language: before either tokenizer, text is NFC-normalised, each CJK character (Han, kana) is made
a word of its own (Chinese and Japanese are written without spaces; character-level scoring is the usual
fallback without a word segmenter), and emoji and other symbols are removed (PTB cannot tokenize characters
outside the Basic Multilingual Plane, and symbols are not words). The PTB tokenizer reads and writes UTF-8 whatever
the locale; the pure-Python one keeps letters and digits of every script.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

# what pycocoevalcap's PTBTokenizer drops after tokenizing
PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)?|\.\.\.|--|[^\s\w]|_")
_CJK = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])")
_NOT_WORDS = {"So", "Sk", "Cs", "Co", "Cn"}  # symbols (emoji), surrogates, private use, unassigned
_warned = False


def java_available() -> bool:
    return shutil.which("java") is not None


def prepare(text: str) -> str:
    """What both tokenizers get: NFC, a space around each CJK character, no emoji or other symbols."""
    text = _CJK.sub(r" \1 ", unicodedata.normalize("NFC", text))
    drop = {"\u200d", "\ufe0e", "\ufe0f"}  # zero-width joiner and variation selectors of emoji sequences
    return "".join(" " if ch in drop or unicodedata.category(ch) in _NOT_WORDS else ch for ch in text)


def simple_tokenize(text: str) -> str:
    """Lower-case, split words (letters and digits of any script) from punctuation, drop the punctuation PTB
    evaluation drops and any other Unicode punctuation (« », “ ”); no Java needed.

    Agrees with the PTB tokenizer on plain English captions; it differs on rare cases (contractions such as
    "don't" stay one token, PTB splits "do n't")."""
    tokens = _TOKEN.findall(prepare(text).lower().replace("\n", " "))
    return " ".join(t for t in tokens if t not in PUNCTUATIONS and not unicodedata.category(t[0]).startswith("P"))


def caption_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], use_java: bool | None = None
) -> dict[str, float]:
    """Corpus-level BLEU-1..4, METEOR, ROUGE-L, CIDEr-D of one prediction per key against its references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(predictions) != set(references):
        raise ValueError("predictions and references must have the same keys")
    if not predictions:
        raise ValueError("no captions to score")
    java = java_available() if use_java is None else use_java
    gts, res = tokenize(references, predictions, java)
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if java:
        scores["METEOR"] = meteor(gts, res)
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    return scores


def tokenize(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], java: bool
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """pycocoevalcap's input: {key: [tokenized caption, ...]} for references and predictions."""
    global _warned
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": prepare(c)} for c in refs] for k, refs in references.items()})
        res = tok.tokenize({k: [{"caption": prepare(predictions[k])}] for k in references})
        return gts, res
    if not _warned:
        warnings.warn("Java not found: using a pure-Python tokenizer and skipping METEOR", stacklevel=3)
        _warned = True
    gts = {k: [simple_tokenize(c) for c in refs] for k, refs in references.items()}
    return gts, {k: [simple_tokenize(predictions[k])] for k in references}


def meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    """pycocoevalcap's METEOR, with its Java process ended whatever happens: on a failure its lock stays held and
    the scorer's own clean-up would then wait for it forever."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    except Exception as err:
        raise RuntimeError(f"the METEOR scorer (Java) failed: {err!r}") from err
    finally:
        end_meteor(scorer)


def end_meteor(scorer: Any) -> None:
    """Stop a pycocoevalcap `Meteor` scorer's Java process and close its pipes (its own clean-up leaves them open)."""
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()
    for pipe in (scorer.meteor_p.stdin, scorer.meteor_p.stdout, scorer.meteor_p.stderr):
        if pipe is not None:
            pipe.close()
        if scorer.lock.locked():
            scorer.lock.release()
