"""Beam search as tensor code (see `beam_search`); `captioner.generate.generate` calls it for num_beams > 1."""

from __future__ import annotations

import torch

from captioner.decoding import GenerationConfig, Hypothesis, SpecialIds, Steps, check_every, process


def beam_search(steps: Steps, special: SpecialIds, config: GenerationConfig, max_new: int) -> list[list[Hypothesis]]:
    """Beam search as tensor code: every image's beams, candidates and finished hypotheses live in (B, ...) tensors,
    one batched top-k over beams x vocabulary per step, no per-image Python loop; the host reads the "all done"
    flag every `check_every(device)` steps and the results once, at the end.

    Per step and image (as Hugging Face's `BeamSearchScorer`): of the top 2K candidates, an EOS among the first K
    finishes a hypothesis (length = tokens + EOS); the first K that are not EOS are the next beams. Each image keeps
    its K best finished hypotheses by score; it is done when no running beam can still beat the worst of them.
    """
    B, K, V, L = steps.images, config.num_beams, steps.vocab_size, max_new
    device = steps.device
    steps.start(B * K, max_new + 1)
    lp, inf = config.length_penalty, float("-inf")
    first_row = torch.arange(B, device=device)[:, None] * K  # (B, 1): row of each image's beam 0
    beam_scores = torch.zeros(B, K, device=device)  # running sums of log-probs
    beam_scores[:, 1:] = inf  # all beams start identical: expand beam 0 only at first
    last = torch.full((B * K, 1), special.bos_id, dtype=torch.long, device=device)
    history = torch.full((B * K, L), special.pad_id, dtype=torch.long, device=device)  # columns [:step] written
    pool = _Finished(B, K, L, special.pad_id, device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    C = min(2 * K, K * V)
    rank = torch.arange(C, device=device)  # (C,)
    every = check_every(device)
    taken = 0
    for step in range(max_new):
        logprobs = process(steps(last, step), history[:, :step], step, special, config)  # (BK, V)
        cand = (beam_scores.view(-1, 1) + logprobs).view(B, K * V)  # (B, K*V)
        top_scores, top_idx = cand.topk(C, dim=1)  # (B, C), best first
        src, tok = top_idx // V, top_idx % V  # (B, C): beam and token of each candidate
        alive, is_eos = top_scores > inf, tok == special.eos_id
        # an EOS among the first K candidates finishes a hypothesis of the tokens so far
        ended = is_eos & alive & (rank < K) & ~done[:, None]  # (B, C)
        ended_tokens = history.view(B, K, L).gather(1, src[:, :, None].expand(B, C, L))  # (B, C, L)
        pool.add(ended, ended_tokens, top_scores, step + 1, lp, truncated=False)
        # the first K live non-EOS candidates go on (fewer with tiny vocabularies: the rest are dead beams)
        going = ~is_eos & alive
        going &= going.cumsum(1) <= K
        pick = torch.where(going, rank, C + rank).argsort(dim=1)[:, :K]  # (B, K): the going ones, in rank order
        kept = going.gather(1, pick)  # (B, K)
        beam_scores = torch.where(kept, top_scores.gather(1, pick), inf)
        next_tokens = torch.where(kept, tok.gather(1, pick), special.pad_id)
        rows = (first_row + torch.where(kept, src.gather(1, pick), 0)).view(-1)  # (BK,)
        done |= _no_beam_can_win(pool, beam_scores[:, 0], step + 1, max_new, config)
        steps.reorder(rows)
        history = history.index_select(0, rows)
        history[:, step] = next_tokens.view(-1)
        last = next_tokens.view(-1, 1)
        taken = step + 1
        if taken % every == 0 and bool(done.all()):
            break
    # the token limit reached: the running beams of unfinished images compete as they are
    open_beams = ~done[:, None] & (beam_scores > inf)  # (B, K)
    pool.add(open_beams, history.view(B, K, L), beam_scores, taken, lp, truncated=True)
    return pool.hypotheses(config.num_return_sequences, lp)


class _Finished:
    """Each image's K best finished hypotheses, in tensors: tokens (B, K, L) padded, sums of log-probs, lengths
    (tokens + EOS), truncation flags, and scores in float64 (sum / length ** length_penalty, as Python computes)."""

    def __init__(self, B: int, K: int, L: int, pad_id: int, device: torch.device) -> None:
        self.K = K
        self.tokens = torch.full((B, K, L), pad_id, dtype=torch.long, device=device)
        self.logprob = torch.full((B, K), float("-inf"), device=device)
        self.length = torch.zeros(B, K, dtype=torch.long, device=device)
        self.truncated = torch.zeros(B, K, dtype=torch.bool, device=device)
        self.score = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)  # -inf: empty slot

    def add(
        self, mask: torch.Tensor, tokens: torch.Tensor, logprob: torch.Tensor, length: int, lp: float, truncated: bool
    ) -> None:
        """Offer the candidates where `mask` (B, M) holds (tokens (B, M, L), log-prob sums (B, M)); keep the K best."""
        B, M = mask.shape
        score = torch.where(mask, logprob.double() / length**lp, float("-inf"))  # (B, M)
        scores = torch.cat([self.score, score], dim=1)  # (B, K + M)
        keep = scores.topk(self.K, dim=1).indices  # (B, K)
        self.score = scores.gather(1, keep)
        self.logprob = torch.cat([self.logprob, logprob], dim=1).gather(1, keep)
        self.length = torch.cat([self.length, self.length.new_full((B, M), length)], dim=1).gather(1, keep)
        self.truncated = torch.cat([self.truncated, self.truncated.new_full((B, M), truncated)], dim=1).gather(1, keep)
        all_tokens = torch.cat([self.tokens, tokens], dim=1)  # (B, K + M, L)
        self.tokens = all_tokens.gather(1, keep[:, :, None].expand(-1, -1, all_tokens.size(2)))

    def count(self) -> torch.Tensor:
        return (self.score > float("-inf")).sum(1)  # (B,)

    def hypotheses(self, n: int, lp: float) -> list[list[Hypothesis]]:
        """The n best of each image, best first, read back to the host once."""
        order = self.score.argsort(dim=1, descending=True, stable=True)[:, :n]  # (B, n)
        filled = self.score.gather(1, order) > float("-inf")
        pick = lambda t: t.gather(1, order).tolist()  # noqa: E731
        tokens = self.tokens.gather(1, order[:, :, None].expand(-1, -1, self.tokens.size(2))).tolist()
        out = []
        for f, tok, lps, lens, cut in zip(
            filled.tolist(), tokens, pick(self.logprob), pick(self.length), pick(self.truncated), strict=True
        ):
            out.append([
                Hypothesis(t[: n_ - (not c)], s / n_**lp, s, c)
                for ok, t, s, n_, c in zip(f, tok, lps, lens, cut, strict=True) if ok
            ])  # fmt: skip
        return out


def _no_beam_can_win(
    pool: _Finished, best_running: torch.Tensor, length: int, max_new: int, config: GenerationConfig
) -> torch.Tensor:
    """(B,) images where no running beam can still beat the worst kept hypothesis (exact: log-probs are <= 0)."""
    full = pool.count() >= config.num_beams
    if config.early_stopping:
        return (best_running == float("-inf")) | full
    lp = config.length_penalty
    # more tokens only lower the sum; with lp > 0 a longer length can raise sum / length**lp: best at max length
    best_length = max_new if lp > 0 else length
    bound = best_running.double() / best_length**lp
    return (best_running == float("-inf")) | (full & (bound <= pool.score.min(1).values))
