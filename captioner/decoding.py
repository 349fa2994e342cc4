"""What every decoding loop shares: the options (`GenerationConfig`), a returned `Hypothesis`, the special ids,
the decoder as the loops drive it (`Steps`) and the models that make one (`CaptionModel`: the PyTorch `Captioner`,
and ONNX Runtime over an export, `captioner.export.runtime`), one decoder step on the newest position, the logit
processors (penalties, n-gram ban, sampling warpers), and how often a loop reads its "all done" flag on the host.
The loops: `captioner.generate` (greedy, sampling) and `captioner.beam_search`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from captioner.config import CaptionerConfig
from captioner.decoder import TextDecoder
from captioner.errors import ArgumentError
from captioner.options import Control, check_options, option, specs
from captioner.preprocess import Preprocessing


class SpecialIds(Protocol):
    bos_id: int
    eos_id: int
    pad_id: int


class Steps(Protocol):
    """One decoder over the rows of a call, as the decoding loops drive it: `start` sets up `rows` rows (each
    image's rows together: row = image * rows_per_image + j) of at most `length` positions, each call feeds the
    (R, 1) newest tokens of step `step` and returns their (R, V) float logits, `reorder` makes row i old row
    rows[i] (beam search), `close` frees what `start` set up."""

    images: int  # B, the images of the call
    vocab_size: int  # V
    device: torch.device  # where the loops keep their tensors

    def start(self, rows: int, length: int) -> None: ...

    def __call__(self, last: torch.Tensor, step: int) -> torch.Tensor: ...

    def reorder(self, rows: torch.Tensor) -> None: ...

    def close(self) -> None: ...


class CaptionModel(Protocol):
    """What captioning needs of a model (`captioner.inference`, `captioner.runs`): its config (the block size), its
    recorded preprocessing, its device, the images' memory, and the decoder `Steps` over that memory. The memory is
    whatever `encode` returns and `decode_steps` takes: (B, N, D) for the `Captioner`, the encoder's outputs for
    ONNX Runtime."""

    config: CaptionerConfig
    preprocessing: Preprocessing

    @property
    def device(self) -> torch.device: ...

    def encode(self, images: torch.Tensor) -> Any: ...

    def decode_steps(self, memory: Any, config: GenerationConfig) -> Steps: ...


# token counts: more than any block size
HUGE = 10**9


@dataclass
class GenerationConfig:
    """Decoding options (names as in Hugging Face `generate`). Each field declares its option once (help, the range
    where the decoding arithmetic stays finite, the page's control): the flags of `caption` and `evaluate`, the
    API's query parameters and docs and the page's controls are made from these fields (`captioner.options`).

    Two fields are not options, for a Python caller only: `static=True` runs the decoder step with the same shapes
    at every step (the whole KV cache under a length mask, the position a tensor: nothing read on the host) and
    gives the eager step's tokens; `compile=True` implies it and runs that step through
    `torch.compile(fullgraph=True)`, compiled once per process for each shape of rows, image tokens and token limit
    (the first call pays seconds). Eager stays the default (`captioner.static_step`)."""

    max_new_tokens: int | None = option(
        None,
        "token limit of a caption (unset: what the model's block size allows, block_size - 1)",
        low=1,
        high=HUGE,
        why="tokens per caption; the model's block size caps it anyway",
        control=Control("Max new tokens", 1),
    )
    min_new_tokens: int = option(
        0, "EOS is forbidden before this many tokens", low=0, high=HUGE, why="tokens before EOS is allowed"
    )
    num_beams: int = option(
        1,
        "beam search with this many beams (1: greedy)",
        low=1,
        high=256,
        why="each beam is a row of the batch",
        control=Control("Beams (1: greedy)", 1),
    )
    do_sample: bool = option(
        False, "sample instead of greedy / beam search", control=Control("Sample instead of greedy / beam search")
    )
    temperature: float = option(
        1.0,
        "sampling: log-probs are divided by it",
        low=1e-6,
        high=1e6,
        why="log-probs are divided by it: a smaller one overflows",
        control=Control("Temperature (sampling)", 0.1, 2.0, 0.05),
    )
    top_k: int | None = option(
        None, "sampling: keep the k most likely tokens (unset: all)", low=1, high=HUGE, why="tokens kept"
    )
    top_p: float | None = option(
        None,
        "sampling: keep the fewest most likely tokens whose probability reaches p (unset: all)",
        low=1e-6,
        high=1.0,
        why="the probability mass kept",
    )
    length_penalty: float = option(
        1.0,
        "beam and returned scores divide by length ** length_penalty",
        low=-10.0,
        high=10.0,
        why="scores divide by length ** length_penalty: a larger one overflows",
        control=Control("Length penalty", -2.0, 2.0, 0.1),
    )
    early_stopping: bool = option(False, "beam search: stop an image once num_beams hypotheses are finished")
    no_repeat_ngram_size: int = option(
        0,
        "forbid repeating an n-gram of this many tokens (0: off)",
        low=0,
        high=HUGE,
        why="0 is off",
        control=Control("No repeated n-grams of (0: off)", 0, 6),
    )
    repetition_penalty: float = option(
        1.0,
        "CTRL penalty on tokens already generated (1.0: off)",
        low=1e-6,
        high=1e6,
        why="1.0 is off; logits are multiplied or divided by it",
        control=Control("Repetition penalty (1: off)", 1.0, 2.0, 0.05),
    )
    num_return_sequences: int = option(
        1,
        "n-best captions per image",
        low=1,
        high=256,
        why="each sequence is a row of the batch",
        control=Control("Captions to return (n-best)", 1),
    )
    seed: int | None = option(
        None,
        "sampling seed: the same seed gives the same samples (for the same batches)",
        low=0,
        high=2**63 - 1,
        why="the generator's seed is a 64-bit integer",
    )
    # How the decoder step runs (`captioner.static_step`), for a Python caller only: not options of the flags, the
    # API or the page, so that no request can make a server compile. Eager is the default: it pays where compiling
    # does not (a few calls, changing batch sizes: each new shape compiles once more).
    static: bool = False  # every step the same shapes: the whole KV cache under a length mask; the same tokens
    compile: bool = False  # the static step compiled once by torch.compile(fullgraph=True); implies `static`

    def validate(self) -> None:
        """Refuse options that would decode nonsense (NaN scores, no sequence, an error deep inside): every option of
        its type and in its range (`captioner.options.check_options`), and the combinations that cannot run;
        ArgumentError naming them."""
        check_options(self)
        for name in ("static", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentError("{0} must be true or false", (name, getattr(self, name)))
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise ArgumentError(
                "{0} needs {1} >= that (or {2})",
                ("num_return_sequences", self.num_return_sequences),
                "num_beams",
                ("do_sample", True),
            )
        if self.do_sample and self.num_beams > 1:
            raise ArgumentError(
                "beam sampling is not supported: use {0} > 1 or {1}, not both", "num_beams", ("do_sample", True)
            )


# the range of each number (low, high, why), as the fields declare it
LIMITS: dict[str, tuple[float, float, str]] = {
    name: (s.option.low, s.option.high, s.option.why)
    for name, s in specs(GenerationConfig).items()
    if s.option.low is not None and s.option.high is not None
}


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, without BOS and EOS
    score: float  # sum of log-probs / length ** length_penalty
    logprob: float  # sum of log-probs of the generated tokens (EOS included when it ended with EOS)
    truncated: bool = False  # stopped by the token limit (max_new_tokens or the block size), not by an EOS


@dataclass
class TokenIds:
    """Special token ids without a tokenizer (tests, benchmarks); a `CaptionTokenizer` serves as well."""

    bos_id: int
    eos_id: int
    pad_id: int


def step_logits(decoder: TextDecoder, last: torch.Tensor, kv: list, pos: int | torch.Tensor) -> torch.Tensor:
    """(R, 1) newest tokens at position `pos` -> (R, V) float logits; LM head on that position only. A 0-dim tensor
    `pos` makes it the static step (`captioner.static_step`)."""
    hidden = decoder.hidden(last, kv, start=pos)[:, -1]  # (R, C)
    return decoder.logits(hidden).float()


def process(logits: torch.Tensor, history: torch.Tensor, step: int, special: SpecialIds, config: GenerationConfig):
    """Penalties on (R, V) logits given (R, step) generated tokens; returns log-probs (R, V)."""
    if config.repetition_penalty != 1.0 and history.size(1) > 0:
        seen = logits.gather(1, history)
        seen = torch.where(seen > 0, seen / config.repetition_penalty, seen * config.repetition_penalty)
        logits = logits.scatter(1, history, seen)
    if step < config.min_new_tokens:
        logits[:, special.eos_id] = float("-inf")
    if config.no_repeat_ngram_size > 0:
        ban_repeated_ngrams(logits, history, config.no_repeat_ngram_size)
        # a row whose every token is banned (a small vocabulary, EOS not allowed yet or banned too) ends here with
        # EOS, instead of a row of NaN log-probs
        stuck = torch.isneginf(logits).all(dim=-1)  # (R,)
        logits[:, special.eos_id] = torch.where(stuck, 0.0, logits[:, special.eos_id])
    return F.log_softmax(logits, dim=-1)


def ban_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Forbid tokens that would complete an n-gram already present in the row's history (in place), for all rows at
    once: every window of n tokens whose first n - 1 equal the row's last n - 1 bans its last token."""
    T = history.size(1)
    if T < n:  # no complete n-gram yet
        return
    windows = history.unfold(1, n, 1)  # (R, T - n + 1, n)
    match = (windows[:, :, :-1] == history[:, T - n + 1 :][:, None, :]).all(-1)  # (R, T - n + 1)
    banned = torch.zeros_like(logits).scatter_add_(1, windows[:, :, -1], match.to(logits.dtype)) > 0  # (R, V)
    logits.masked_fill_(banned, float("-inf"))


def warp(logprobs: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Temperature, top-k and top-p on (R, V) log-probs -> sampling logits."""
    logits = logprobs / config.temperature
    if config.top_k is not None and config.top_k > 0:
        kth = logits.topk(min(config.top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= config.top_p  # keep the smallest set reaching top_p
        drop[:, 0] = False  # and always the most likely token (a top_p that rounds to 0 in float32 would drop it)
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def check_every(device: torch.device) -> int:
    """How often the decoding loops read their "all done" flag on the host: every step on the CPU (free there, and
    steps past the end cost time), every 4 steps on an accelerator (a read waits for the queued kernels)."""
    return 1 if device.type == "cpu" else 4
