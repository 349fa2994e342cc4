"""Caption generation: greedy, beam search and sampling over a KV-cached decoder.

One API (`generate`) serves validation, the caption command and Python users. For every call:
- the image keys/values of each cross-attention layer are computed once per image and shared by all beams or
  samples of that image by broadcasting (see `CrossAttention`), never copied per beam or per step;
- the loops drive the decoder through `Steps` (`captioner.decoding`): the PyTorch one (`captioner.static_step`) or
  ONNX Runtime's (`captioner.export.runtime`), the same search code on either's logits;
- self-attention keys/values live in preallocated buffers (`TextDecoder.set_kv_cache`), one new token per step;
- the LM head runs only on the newest position;
- the decoder step is eager by default; `GenerationConfig(static=True)` makes its shapes the same at every step
  (the whole cache under a length mask, the position a tensor), `compile=True` compiles that step once
  (`captioner.static_step`); the tokens are the same.

Scores: every returned sequence has `score = sum of log-probs / length ** length_penalty`, where the log-probs are
those of the chosen tokens after the penalties (repetition, no-repeat n-gram, min length) and before sampling
warpers (temperature, top-k, top-p), and `length` counts the generated tokens including the final EOS.
"""

from __future__ import annotations

from typing import Any

import torch

from captioner.beam_search import beam_search
from captioner.decoding import (
    CaptionModel,
    GenerationConfig,
    Hypothesis,
    SpecialIds,
    Steps,
    TokenIds,
    check_every,
    process,
    warp,
)

__all__ = ["GenerationConfig", "Hypothesis", "SpecialIds", "TokenIds", "generate", "greedy"]


@torch.inference_mode()
def generate(
    model: CaptionModel,
    images: torch.Tensor | None,
    special: SpecialIds,
    config: GenerationConfig | None = None,
    memory: Any = None,
) -> list[list[Hypothesis]]:
    """Captions for a batch of images: per image, `num_return_sequences` hypotheses, best first.

    Args:
        model: a `Captioner`, or ONNX Runtime over an export (`captioner.export.runtime.OnnxCaptioner`).
        images: (B, 3, H, W); ignored when `memory` from `model.encode` (B, N, D for a `Captioner`) is given.
    """
    config = config or GenerationConfig()
    config.validate()
    if memory is None:
        if images is None:
            raise ValueError("generate needs images or their memory")
        memory = model.encode(images)
    steps = model.decode_steps(memory, config)
    max_new = min(config.max_new_tokens or model.config.block_size, model.config.block_size - 1)
    try:
        if config.num_beams > 1:
            return beam_search(steps, special, config, max_new)
        return _greedy_or_sample(steps, special, config, max_new)
    finally:
        steps.close()


def greedy(
    model: CaptionModel,
    images: torch.Tensor | None,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int | None = None,
    memory: Any = None,
) -> list[list[int]]:
    """Greedy token ids per image (without BOS/EOS); a shortcut for `generate`."""
    special = TokenIds(bos_id, eos_id, pad_id)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    return [hyps[0].tokens for hyps in generate(model, images, special, cfg, memory)]


def _greedy_or_sample(
    steps: Steps, special: SpecialIds, config: GenerationConfig, max_new: int
) -> list[list[Hypothesis]]:
    B, G = steps.images, config.num_return_sequences if config.do_sample else 1
    R = B * G  # rows grouped image by image: row = image * G + g
    device = steps.device
    steps.start(R, max_new + 1)
    generator = None
    if config.do_sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    last = torch.full((R, 1), special.bos_id, dtype=torch.long, device=device)
    history = torch.empty((R, 0), dtype=torch.long, device=device)
    logprob = torch.zeros(R, device=device)
    length = torch.zeros(R, dtype=torch.long, device=device)
    done = torch.zeros(R, dtype=torch.bool, device=device)
    every = check_every(device)
    for step in range(max_new):
        logprobs = process(steps(last, step), history, step, special, config)  # (R, V)
        if config.do_sample:
            probs = warp(logprobs, config).softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (R,)
        else:
            nxt = logprobs.argmax(dim=-1)  # (R,)
        logprob += torch.where(done, 0.0, logprobs.gather(1, nxt[:, None]).squeeze(1))
        length += (~done).long()
        nxt = torch.where(done, torch.full_like(nxt, special.pad_id), nxt)
        done |= nxt == special.eos_id
        history = torch.cat([history, nxt[:, None]], dim=1)
        last = nxt[:, None]
        if (step + 1) % every == 0 and bool(done.all()):
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
