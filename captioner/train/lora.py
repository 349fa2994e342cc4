"""LoRA through peft on named groups of a Captioner's Linear layers (`train.settings.Lora`), and the merged plain
copy that the exported package holds.

peft is used on our nn.Module as its low-level API intends: `LoraConfig(target_modules=[full module names])` and
`inject_adapter_in_model`, which replaces each targeted Linear in place by a LoRA layer (`<name>.base_layer`, the
frozen Linear, and `<name>.lora_A.default` / `lora_B.default`). A fused Linear (`attn.c_attn` = [q; k; v], a gated
MLP's `mlp.c_fc` = [gate; up]) gets one adapter: its parts share `A` and one rank, the update `B @ A` spans all of
them (as peft on GPT-2's fused `c_attn`), not one rank-r update per projection."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from captioner.model import Captioner
from captioner.train.parameters import is_adapter
from captioner.train.settings import Lora


def _block_part(name: str) -> str | None:
    """`attn` for `decoder.h.3.attn.c_attn`: the part of a decoder block a module lies in (None outside blocks)."""
    parts = name.split(".")
    return parts[3] if len(parts) > 4 and parts[:2] == ["decoder", "h"] else None


LORA_GROUPS: dict[str, Callable[[str], bool]] = {
    "lm_attention": lambda name: _block_part(name) == "attn",
    "lm_mlp": lambda name: _block_part(name) == "mlp",
    "cross_attention": lambda name: _block_part(name) in ("cross", "cross_mlp"),
    "vision": lambda name: name.startswith("encoder.backbone."),
}
LM_GROUPS = ("lm_attention", "lm_mlp")


def lora_targets(model: Captioner, groups: list[str]) -> list[str]:
    """The full names of the Linear layers that `groups` adapt; ValueError for an unknown group, a language model
    group without a pretrained language model, or a group the model has no Linear layer in."""
    targets: list[str] = []
    for group in groups:
        if group not in LORA_GROUPS:
            raise ValueError(f"finetune.lora.groups: unknown group {group!r}; choose from {', '.join(LORA_GROUPS)}")
        if group in LM_GROUPS and not model.config.decoder_init_from:
            raise ValueError(
                f"finetune.lora.groups: {group} adapts a pretrained language model, and this model has none: set "
                "config.decoder_init_from (or init_from a package made from one), or drop the group"
            )
        found = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and LORA_GROUPS[group](n)]
        if not found:
            raise ValueError(f"finetune.lora.groups: this model has no Linear layer in group {group}")
        targets += [n for n in found if n not in targets]
    return targets


def add_lora(model: Captioner, lora: Lora) -> None:
    """Inject LoRA adapters (peft) into the Linear layers of `lora.groups`, in place; nothing without groups.
    peft marks only the adapters trainable; the fine-tuning policy sets the other parameters afterwards."""
    if not lora.groups:
        return
    targets = lora_targets(model, lora.groups)
    if lora.r < 1:
        raise ValueError(f"finetune.lora.r={lora.r}: the rank must be at least 1")
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(target_modules=targets, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout)
    inject_adapter_in_model(config, model)


def has_lora(model: nn.Module) -> bool:
    return any(is_adapter(name) for name, _ in model.named_parameters())


def merged(model: Captioner) -> Captioner:
    """A plain float32 copy of `model` with every LoRA update merged into its Linear's weight and the peft layers
    gone, the names, modules and dtype a package holds; the model itself is untouched (training goes on). A float32
    model without LoRA is returned as it is.

    `merge_and_unload` belongs to peft's `LoraModel` wrapper, which `inject_adapter_in_model` does not return;
    this is its loop on the copy: each LoRA layer merges (`LoraLayer.merge`) and is replaced by its base Linear."""
    if not has_lora(model) and all(p.dtype == torch.float32 for p in model.parameters()):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    plain = copy.deepcopy(model).float()  # a frozen language model held in bfloat16 merges in float32
    layers = [(name, m) for name, m in plain.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent), child, layer.get_base_layer())
    if hasattr(plain, "peft_config"):
        del plain.peft_config
    return plain
