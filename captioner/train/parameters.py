"""The parts of a captioner's parameters that the training policies name (the vision encoder, its projection, the
language model, the inserted cross-attention layers, LoRA adapters), and the table of what trains in each that
`fit` prints at its start."""

from __future__ import annotations

from torch import nn

from captioner.decoder import is_inserted

GROUPS = ("vision encoder", "image projection", "language model", "cross-attention", "LoRA")


def is_adapter(name: str) -> bool:
    """Whether parameter `name` is a LoRA adapter's (peft names them `<layer>.lora_A.<adapter>.weight`, `lora_B`)."""
    return ".lora_A." in name or ".lora_B." in name


def is_adapted(name: str) -> bool:
    """Whether parameter `name` belongs to a Linear that a LoRA adapter wraps (peft's `<layer>.base_layer.weight`):
    it stays frozen, the adapter learns its update."""
    return ".base_layer." in name


def is_lm(name: str) -> bool:
    """Whether parameter `name` of a Captioner is the language model's own (its embeddings, its blocks'
    self-attention, MLPs and norms, final norm, head), not what joins the image to it or a LoRA adapter."""
    return name.startswith("decoder.") and not is_inserted(name) and not is_adapter(name)


def group_of(name: str) -> str:
    """The group of `GROUPS` that parameter `name` of a Captioner belongs to."""
    if is_adapter(name):
        return "LoRA"
    if name.startswith("encoder."):
        return "vision encoder" if name.startswith("encoder.backbone.") else "image projection"
    return "language model" if is_lm(name) else "cross-attention"


def trainable_table(model: nn.Module) -> str:
    """A small table: each group's trainable and total parameter counts, then the whole model's (tied weights
    counted once)."""
    trainable, total = dict.fromkeys(GROUPS, 0), dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():
        group = group_of(name)
        total[group] += p.numel()
        trainable[group] += p.numel() if p.requires_grad else 0
    rows = [(g, trainable[g], total[g]) for g in GROUPS if total[g]]
    rows.append(("all", sum(trainable.values()), sum(total.values())))
    lines = [f"{'group':<18} {'trainable':>12} {'total':>12}"]
    lines += [f"{g:<18} {t:>12,} {n:>12,}" for g, t, n in rows]
    return "trainable parameters:\n" + "\n".join(lines)
