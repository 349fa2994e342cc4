"""Caption generation: greedy, beam search and sampling over a KV-cached decoder.

One API (`generate`) serves validation, the caption command and Python users. For every call:
- the image keys/values of each cross-attention layer are computed once per image and shared by all beams or
  samples of that image by broadcasting (see `CrossAttention`), never copied per beam or per step;
- self-attention keys/values live in preallocated buffers (`TextDecoder.set_kv_cache`), one new token per step;
- the LM head runs only on the newest position.

Scores: every returned sequence has `score = sum of log-probs / length ** length_penalty`, where the log-probs are
those of the chosen tokens after the penalties (repetition, no-repeat n-gram, min length) and before sampling
warpers (temperature, top-k, top-p), and `length` counts the generated tokens including the final EOS.
"""

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
        """Refuse options that would decode nonsense (NaN scores, no sequence, an error deep inside), naming them."""
        import math

        for name in ("max_new_tokens", "num_beams", "num_return_sequences"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if self.min_new_tokens < 0 or self.no_repeat_ngram_size < 0:
            raise ValueError("min_new_tokens and no_repeat_ngram_size must be >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}: must be at least 1 (or unset)")
        for name in ("temperature", "repetition_penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                off = " (1.0 is off)" if name == "repetition_penalty" else ""
                raise ValueError(f"{name}={value}: must be a finite number > 0{off}")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty={self.length_penalty}: must be a finite number")
        if self.num_return_sequences > max(self.num_beams, 1) and not self.do_sample:
            raise ValueError(f"num_return_sequences={self.num_return_sequences} needs num_beams >= that (or sampling)")
        if self.do_sample and self.num_beams > 1:
            raise ValueError("beam sampling is not supported: use num_beams > 1 or do_sample, not both")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass
class Hypothesis:
    tokens: list[int]  # generated tokens, without BOS and EOS
    score: float  # sum of log-probs / length ** length_penalty
    logprob: float  # sum of log-probs of the generated tokens (EOS included when it ended with EOS)
    truncated: bool = False  # stopped by the token limit (max_new_tokens or the block size), not by an EOS


@torch.inference_mode()
def generate(
    model: Captioner,
    images: torch.Tensor | None,
    special: SpecialIds,
    config: GenerationConfig | None = None,
    memory: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Captions for a batch of images: per image, `num_return_sequences` hypotheses, best first.

    Args:
        images: (B, 3, H, W); ignored when `memory` (B, N, D) from `model.encode` is given.
    """
    config = config or GenerationConfig()
    config.validate()
    memory = model.encode(images) if memory is None else memory
    kv = model.image_kv(memory)  # once per image, per call
    max_new = min(config.max_new_tokens or model.config.block_size, model.config.block_size - 1)
    try:
        if config.num_beams > 1:
            return _beam_search(model, kv, memory.size(0), special, config, max_new)
        return _greedy_or_sample(model, kv, memory.size(0), special, config, max_new)
    finally:
        model.decoder.clear_kv_cache()


def greedy(
    model: Captioner,
    images: torch.Tensor | None,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int | None = None,
    memory: torch.Tensor | None = None,
) -> list[list[int]]:
    """Greedy token ids per image (without BOS/EOS); a shortcut for `generate`."""
    special = TokenIds(bos_id, eos_id, pad_id)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    return [hyps[0].tokens for hyps in generate(model, images, special, cfg, memory)]


@dataclass
class TokenIds:
    """Special token ids without a tokenizer (tests, benchmarks); a `CaptionTokenizer` serves as well."""

    bos_id: int
    eos_id: int
    pad_id: int


def _step_logits(model: Captioner, last: torch.Tensor, kv: list, pos: int) -> torch.Tensor:
    """(R, 1) newest tokens at position `pos` -> (R, V) float logits; LM head on that position only."""
    hidden = model.decoder.hidden(last, kv, start=pos)[:, -1]  # (R, C)
    return model.decoder.lm_head(hidden).float()


def _process(logits: torch.Tensor, history: torch.Tensor, step: int, special: SpecialIds, config: GenerationConfig):  # noqa: ANN202
    """Penalties on (R, V) logits given (R, step) generated tokens; returns log-probs (R, V)."""
    if config.repetition_penalty != 1.0 and history.size(1) > 0:
        seen = logits.gather(1, history)
        seen = torch.where(seen > 0, seen / config.repetition_penalty, seen * config.repetition_penalty)
        logits = logits.scatter(1, history, seen)
    if step < config.min_new_tokens:
        logits[:, special.eos_id] = float("-inf")
    if config.no_repeat_ngram_size > 0:
        _ban_repeated_ngrams(logits, history, config.no_repeat_ngram_size)
    return F.log_softmax(logits, dim=-1)


def _ban_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Forbid tokens that would complete an n-gram already present in the row's history (in place)."""
    if history.size(1) < n - 1:
        return
    for row, seq in enumerate(history.tolist()):
        prefix = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix]
        if banned:
            logits[row, banned] = float("-inf")


def _warp(logprobs: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Temperature, top-k and top-p on (R, V) log-probs -> sampling logits."""
    logits = logprobs / config.temperature
    if config.top_k is not None and config.top_k > 0:
        kth = logits.topk(min(config.top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None and config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= config.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _greedy_or_sample(
    model: Captioner, kv: list, B: int, special: SpecialIds, config: GenerationConfig, max_new: int
) -> list[list[Hypothesis]]:
    G = config.num_return_sequences if config.do_sample else 1
    R = B * G  # rows grouped image by image: row = image * G + g
    device = kv[0][0].device
    model.decoder.set_kv_cache(R, max_new + 1)
    generator = None
    if config.do_sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    last = torch.full((R, 1), special.bos_id, dtype=torch.long, device=device)
    history = torch.empty((R, 0), dtype=torch.long, device=device)
    logprob = torch.zeros(R, device=device)
    length = torch.zeros(R, dtype=torch.long, device=device)
    done = torch.zeros(R, dtype=torch.bool, device=device)
    for step in range(max_new):
        logprobs = _process(_step_logits(model, last, kv, step), history, step, special, config)  # (R, V)
        if config.do_sample:
            probs = _warp(logprobs, config).softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (R,)
        else:
            nxt = logprobs.argmax(dim=-1)  # (R,)
        logprob += torch.where(done, 0.0, logprobs.gather(1, nxt[:, None]).squeeze(1))
        length += (~done).long()
        nxt = torch.where(done, torch.full_like(nxt, special.pad_id), nxt)
        done |= nxt == special.eos_id
        history = torch.cat([history, nxt[:, None]], dim=1)
        last = nxt[:, None]
        if bool(done.all()):
            break
    out = []
    for r, seq in enumerate(history.tolist()):
        tokens = _until(seq, special.eos_id)
        lp, n = float(logprob[r]), int(length[r])
        truncated = special.eos_id not in seq
        out.append(Hypothesis(tokens, lp / max(n, 1) ** config.length_penalty, lp, truncated))
    return [sorted(out[b * G : (b + 1) * G], key=lambda h: -h.score) for b in range(B)]


def _until(seq: list[int], eos: int) -> list[int]:
    return seq[: seq.index(eos)] if eos in seq else seq


def _beam_search(
    model: Captioner, kv: list, B: int, special: SpecialIds, config: GenerationConfig, max_new: int
) -> list[list[Hypothesis]]:
    K = config.num_beams
    device = kv[0][0].device
    model.decoder.set_kv_cache(B * K, max_new + 1)
    beam_scores = torch.zeros(B, K, device=device)  # running sums of log-probs
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: expand beam 0 only at first
    last = torch.full((B * K, 1), special.bos_id, dtype=torch.long, device=device)
    history = torch.empty((B * K, 0), dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new):
        logprobs = _process(_step_logits(model, last, kv, step), history, step, special, config)  # (BK, V)
        V = logprobs.size(-1)
        cand = (beam_scores.view(-1, 1) + logprobs).view(B, K * V)  # (B, K*V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K)
        next_scores = torch.zeros(B, K, device=device)
        next_tokens = torch.full((B, K), special.pad_id, dtype=torch.long, device=device)
        next_src = torch.zeros(B, K, dtype=torch.long, device=device)
        hist = history.tolist()
        for b, (scores_b, idx_b) in enumerate(zip(top_scores.tolist(), top_idx.tolist(), strict=True)):
            if done[b]:
                next_src[b] = b * K  # keep a valid row; its results are ignored
                continue
            n = 0
            for rank, (s, i) in enumerate(zip(scores_b, idx_b, strict=True)):
                src, tok = divmod(i, V)
                if s == float("-inf"):
                    break
                if tok == special.eos_id:
                    if rank < K:
                        _add(finished[b], hist[b * K + src], s, step + 1, config)
                    continue
                next_scores[b, n], next_tokens[b, n], next_src[b, n] = s, tok, b * K + src
                n += 1
                if n == K:
                    break
            if n < K:  # fewer live continuations than beams (tiny vocabularies): pad with dead beams
                next_scores[b, n:] = float("-inf")
                next_src[b, n:] = b * K
            done[b] = _is_done(finished[b], float(next_scores[b, 0]), step + 1, max_new, config)
        src = next_src.view(-1)
        model.decoder.reorder_kv_cache(src)
        history = torch.cat([history.index_select(0, src), next_tokens.view(-1, 1)], dim=1)
        last = next_tokens.view(-1, 1)
        beam_scores = next_scores
        if all(done):
            break
    hist = history.tolist()
    for b in range(B):
        if not done[b]:  # max_new_tokens reached: running beams compete as they are
            for k in range(K):
                if beam_scores[b, k] > float("-inf"):
                    _add(finished[b], hist[b * K + k], float(beam_scores[b, k]), len(hist[b * K + k]), config, True)
    return [sorted(f, key=lambda h: -h.score)[: config.num_return_sequences] for f in finished]


def _add(
    hyps: list[Hypothesis], tokens: list[int], logprob: float, length: int, config: GenerationConfig,
    truncated: bool = False,
) -> None:  # fmt: skip
    """Keep the `num_beams` best finished hypotheses of one image."""
    hyps.append(Hypothesis(list(tokens), logprob / length**config.length_penalty, logprob, truncated))
    if len(hyps) > config.num_beams:
        hyps.remove(min(hyps, key=lambda h: h.score))


def _is_done(hyps: list[Hypothesis], best_running: float, length: int, max_new: int, config: GenerationConfig) -> bool:
    """No running beam can still beat the worst kept hypothesis (an exact bound: log-probs are <= 0)."""
    if best_running == float("-inf"):
        return True
    if len(hyps) < config.num_beams:
        return False
    if config.early_stopping:
        return True
    lp = config.length_penalty
    # more tokens only lower the sum; with lp > 0 a longer length can raise sum / length**lp: best at max length
    best_length = max_new if lp > 0 else length
    return best_running / best_length**lp <= min(h.score for h in hyps)
