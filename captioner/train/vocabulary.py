"""The tokenizer of a run, resolved once, before the model is built (litgpt resolves it from the checkpoint and
hands it down): the model is sized from it and the data receives it in `connect`; the data never decides it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

from captioner.config import CaptionerConfig
from captioner.package import TOKENIZER_FILE, read_tokenizer
from captioner.tokenizer import CaptionTokenizer
from captioner.train.settings import TokenizerSource


def resolve_tokenizer(
    source: TokenizerSource,
    package: Path | None,
    config: CaptionerConfig | None,
    training_texts: Callable[[], Iterable[str]],
) -> CaptionTokenizer:
    """The one tokenizer of a run: `source.path` as it is; else the start package's own (`package`); else the
    pretrained language model's (`config.decoder_init_from`); else a byte-level BPE of `source.vocab_size` tokens
    trained on the first `source.train_captions` of `training_texts()`. A loaded tokenizer is then extended by up
    to `source.extend` tokens learned from those captions."""

    def texts() -> Iterable[str]:
        return itertools.islice(training_texts(), source.train_captions)

    if source.path and package is not None:
        raise ValueError(
            f"tokenizer.path={source.path} and init_from={package}: a package brings its own tokenizer, which its "
            "embeddings were trained for; unset tokenizer.path (tokenizer.extend adds tokens to it)"
        )
    if source.path:
        path = Path(source.path)
        loaded = CaptionTokenizer.load(path) if path.suffix == ".json" else CaptionTokenizer.from_hf(source.path)
        if config is not None and config.decoder_init_from:
            check_lms_own(loaded, source.path, str(config.decoder_init_from))
    elif package is not None:
        file = package / TOKENIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"init_from={package} is not a model package: {file} is missing")
        loaded = read_tokenizer(package)
    elif config is not None and config.decoder_init_from:
        loaded = lm_tokenizer(str(config.decoder_init_from))
    elif source.extend:
        raise ValueError(
            f"tokenizer.extend={source.extend} adds tokens to a package's or a language model's tokenizer (init_from, "
            "config.decoder_init_from); the tokenizer trained on these captions has their words already: unset extend"
        )
    else:
        return CaptionTokenizer.train(texts(), vocab_size=source.vocab_size)
    return loaded.extend(texts(), source.extend) if source.extend else loaded


def lm_tokenizer(name: str) -> CaptionTokenizer:
    """The tokenizer of the language model `decoder_init_from` names, with its BOS/EOS/pad conventions
    (`CaptionTokenizer.from_hf`); the checkpoint is opened first, so a family not supported is refused before."""
    from captioner.lm import open_lm

    folder = open_lm(name).folder
    try:
        return CaptionTokenizer.from_hf(str(folder))
    # transformers' words for a folder without a usable tokenizer, or one whose class needs a missing package
    except (OSError, ValueError, ImportError, AttributeError) as err:
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise ValueError(
            f"decoder_init_from={name}: its tokenizer could not be read ({why}); a language model's folder holds "
            "its tokenizer (tokenizer.json, tokenizer_config.json), or give model.tokenizer.path"
        ) from err


def check_lms_own(given: CaptionTokenizer, path: str, name: str) -> None:
    """Refuse `tokenizer.path` unless it is the language model's own tokenizer (the same tokens at the same ids),
    whose ids its embeddings were trained for; a language model folder without a readable tokenizer takes it as
    given (the embedding rows then bound it, `build_model`)."""
    try:
        own = lm_tokenizer(name)
    except ValueError:
        return
    if given.tokenizer.get_vocab() != own.tokenizer.get_vocab():
        raise ValueError(
            f"tokenizer.path={path} is not the tokenizer of decoder_init_from={name} (its tokens or their ids differ), "
            "whose embeddings were trained for that one's ids: unset tokenizer.path (tokenizer.extend adds tokens)"
        )
