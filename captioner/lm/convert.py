"""What a family of language models is to the decoder (`Family`), and the renaming most families share: per-layer
tensors renamed, and the q/k/v and gate/up projections fused into our `c_attn` and `c_fc` (litgpt's converters)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from captioner.config import CaptionerConfig

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Family:
    """A family of transformers causal LMs (one `model_type`, or several sharing weight names).

    config: the transformers config -> our decoder fields (`LM_FIELDS`; `block_size` the LM's longest sequence).
    weights: the checkpoint's tensors (Hugging Face names) and our resolved config -> the decoder's tensors.
    """

    name: str
    config: Callable[[Any], dict[str, Any]]
    weights: Callable[[State, CaptionerConfig], State]


def rename(
    hf: State,
    n_layer: int,
    top: dict[str, str],
    layer: dict[str, str],
    fused: dict[str, tuple[str, ...]],
    layer_prefix: str = "layers.{}.",
    ignore: tuple[str, ...] = (),
) -> State:
    """Our tensors from `hf` (a prefix such as `model.` already removed): `top` maps our names to theirs, `layer`
    their per-layer names (after `layer_prefix`) to ours, `fused` each of our per-layer Linears (no suffix) to the
    Linears concatenated into it, weight and bias alike. A tensor left over has no place: an error names it."""
    hf = dict(hf)
    out = {ours: hf.pop(theirs) for ours, theirs in top.items() if theirs in hf}
    for i in range(n_layer):
        src = layer_prefix.format(i)
        for theirs, ours in layer.items():
            if src + theirs in hf:
                out[f"h.{i}.{ours}"] = hf.pop(src + theirs)
        for ours, parts in fused.items():
            for suffix in (".weight", ".bias"):
                keys = [src + part + suffix for part in parts]
                if all(k in hf for k in keys):
                    out[f"h.{i}.{ours}{suffix}"] = torch.cat([hf.pop(k) for k in keys])
    left = sorted(k for k in hf if not k.endswith(ignore))
    if left:
        raise ValueError(f"the checkpoint's tensor {left[0]!r} has no place in the decoder ({len(left)} left over)")
    return out


def without_prefix(hf: State, prefix: str) -> State:
    return {k.removeprefix(prefix): v for k, v in hf.items()}
