"""The beam search as it was written before it became tensor code (a per-image Python loop over the top 2K
candidates, finished hypotheses in Python lists): kept as the test oracle that `captioner.beam_search`'s tensor
beam search must equal, hypothesis for hypothesis (the logit processors are the library's own), and the row-by-row
n-gram ban that the vectorised one must equal."""

from __future__ import annotations

import torch

from captioner.decoding import GenerationConfig, Hypothesis, SpecialIds
from captioner.decoding import process as _process
from captioner.decoding import step_logits as _step_logits
from captioner.model import Captioner


def reference_ban_repeated_ngrams(logits: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Forbid tokens that would complete an n-gram already present in the row's history (in place), row by row."""
    if history.size(1) < n - 1:
        return
    for row, seq in enumerate(history.tolist()):
        prefix = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix]
        if banned:
            logits[row, banned] = float("-inf")


@torch.inference_mode()
def reference_beam_search(
    model: Captioner, images: torch.Tensor, special: SpecialIds, config: GenerationConfig
) -> list[list[Hypothesis]]:
    memory = model.encode(images)
    kv = model.image_kv(memory)
    max_new = min(config.max_new_tokens or model.config.block_size, model.config.block_size - 1)
    try:
        return _beam_search(model, kv, memory.size(0), special, config, max_new)
    finally:
        model.decoder.clear_kv_cache()


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
        logprobs = _process(_step_logits(model.decoder, last, kv, step), history, step, special, config)  # (BK, V)
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
    hyps: list[Hypothesis],
    tokens: list[int],
    logprob: float,
    length: int,
    config: GenerationConfig,
    truncated: bool = False,
) -> None:
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
