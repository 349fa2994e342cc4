"""What every decoding loop shares: the options (`GenerationConfig`), a returned `Hypothesis`, the special ids,
one decoder step on the newest position, the logit processors (penalties, n-gram ban, sampling warpers), and how
often a loop reads its "all done" flag on the host. The loops: `captioner.generate` (greedy, sampling) and
`captioner.beam_search`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from captioner.model import Captioner


class SpecialIds(Protocol):
    bos_id: int
    eos_id: int
    pad_id: int


@dataclass
class GenerationConfig:
    """Decoding options (names as in Hugging Face `generate`)."""

    max_new_tokens: int | None = None  # None: as many as the model's block size allows (block_size - 1)
    min_new_tokens: int = 0  # EOS is forbidden before this many tokens
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    length_penalty: float = 1.0  # beam and returned scores divide by length ** length_penalty
    early_stopping: bool = False  # beam search: stop an image once num_beams hypotheses are finished
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0  # CTRL penalty on tokens already generated; 1.0 = off
    num_return_sequences: int = 1
    seed: int | None = None  # sampling: a fixed seed gives the same samples

    def validate(self) -> None:
        """Refuse options that would decode nonsense (NaN scores, no sequence, an error deep inside), naming them;
        every number must lie in a range where the decoding arithmetic stays finite (`LIMITS`)."""
        import math

        for name, (low, high, why) in LIMITS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            whole = name in WHOLE
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                raise ValueError(f"{name}={value!r}: must be a {'whole' if whole else 'decimal'} number")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name}={value!r}: must be between {_number(low)} and {_number(high)} ({why})")
        for name in ("do_sample", "early_stopping"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be true or false")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise ValueError(f"num_return_sequences={self.num_return_sequences} needs num_beams >= that (or sampling)")
        if self.do_sample and self.num_beams > 1:
            raise ValueError("beam sampling is not supported: use num_beams > 1 or do_sample, not both")


# the range of each number (low, high, why); beyond them a score, a seed or a buffer would overflow or run out
HUGE = 10**9  # token counts: more than any block size
LIMITS: dict[str, tuple[float, float, str]] = {
    "max_new_tokens": (1, HUGE, "tokens per caption; the model's block size caps it anyway"),
    "min_new_tokens": (0, HUGE, "tokens before EOS is allowed"),
    "num_beams": (1, 256, "each beam is a row of the batch"),
    "num_return_sequences": (1, 256, "each sequence is a row of the batch"),
    "temperature": (1e-6, 1e6, "log-probs are divided by it: a smaller one overflows"),
    "top_k": (1, HUGE, "tokens kept"),
    "top_p": (1e-6, 1.0, "the probability mass kept"),
    "length_penalty": (-10.0, 10.0, "scores divide by length ** length_penalty: a larger one overflows"),
    "no_repeat_ngram_size": (0, HUGE, "0 is off"),
    "repetition_penalty": (1e-6, 1e6, "1.0 is off; logits are multiplied or divided by it"),
    "seed": (0, 2**63 - 1, "the generator's seed is a 64-bit integer"),
}
WHOLE = {"max_new_tokens", "min_new_tokens", "num_beams", "num_return_sequences", "top_k", "no_repeat_ngram_size",
         "seed"}  # fmt: skip
OPTIONAL = {"max_new_tokens", "top_k", "top_p", "seed"}  # None: unset


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


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


def step_logits(model: Captioner, last: torch.Tensor, kv: list, pos: int) -> torch.Tensor:
    """(R, 1) newest tokens at position `pos` -> (R, V) float logits; LM head on that position only."""
    hidden = model.decoder.hidden(last, kv, start=pos)[:, -1]  # (R, C)
    return model.decoder.lm_head(hidden).float()


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
