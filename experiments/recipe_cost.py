"""What a training step of a recipe costs, counted on its real model: parameters per group (trainable and total),
memory of weights, gradients and AdamW states, activation memory, and FLOPs per step, in the recipe's first epoch
(vision encoder frozen) and after it.

The model is the recipe's as written (`configs/coco_siglip_smollm2.yaml` by default) with random weights: timm builds
the encoder by name without its hub weights, and the language model is a random checkpoint of SmolLM2-135M's
shapes (its config.json) saved with `save_pretrained`, so nothing is downloaded; the policies (`model.finetune`:
freeze_lm, LoRA, a bf16 frozen LM) are applied as `captioner fit` applies them. Activations are the bytes of the
tensors autograd saves for the backward pass in one training forward under bf16 autocast (on this CPU: autocast's
CPU op list, close to CUDA's), per image; FLOPs are torch's FlopCounterMode over one real forward + backward
(frozen weights get no weight gradient, so the count is what the step runs). Captions are `--text-tokens` long
(COCO's captions are 10-15 words, about 16 tokens with BOS and EOS; a batch pads to its longest).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import fields
from pathlib import Path

import torch
import yaml

from benchmarks.decode_llama import LLAMA_SIZES
from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.train.build import apply_finetune_policy, hold_frozen_lm
from captioner.train.lora import add_lora
from captioner.train.parameters import GROUPS, group_of
from captioner.train.settings import Finetuning, Lora

ROOT = Path(__file__).resolve().parents[1]
# HuggingFaceTB/SmolLM2-135M's config.json (the fields a Llama config reads): the decode benchmark's sizes
SMOLLM2_135M = {**LLAMA_SIZES["smollm2-135m"], "max_position_embeddings": 8192, "bos_token_id": 0, "eos_token_id": 0}
GiB = 2**30


def recipe(path: Path, lm_folder: Path) -> tuple[CaptionerConfig, Finetuning, int]:
    """The recipe's model config (its LM replaced by the local one, no hub weights), its fine-tuning settings and
    its per-GPU batch size."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    model = data["model"]
    config = CaptionerConfig(**{**model["config"], "decoder_init_from": str(lm_folder), "encoder_pretrained": False})
    tune = dict(model.get("finetune", {}))
    tune["lora"] = Lora(**tune.get("lora", {}))
    finetuning = Finetuning(**{k: v for k, v in tune.items() if k in {f.name for f in fields(Finetuning)}})
    return config, finetuning, int(data["data"]["init_args"]["batch_size"])


def save_lm(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).save_pretrained(folder)
    return folder


def built(config: CaptionerConfig, finetuning: Finetuning, vision_trains: bool) -> Captioner:
    """The model as `captioner fit` builds it (build_model's order: LoRA, policy, the frozen LM's dtype)."""
    torch.manual_seed(0)
    model = Captioner(config)
    add_lora(model, finetuning.lora)
    apply_finetune_policy(model, finetuning.policy, finetuning.freeze_lm)
    if finetuning.frozen_lm_dtype == "bfloat16":
        hold_frozen_lm(model, torch.bfloat16)
    if not vision_trains:  # encoder_frozen_epochs: the backbone is frozen in the first epochs
        model.encoder.backbone.requires_grad_(False)
    return model.train()


def parameter_rows(model: Captioner) -> list[tuple[str, int, int, int]]:
    """(group, trainable, total, bytes held) per group, then all."""
    rows = {g: [0, 0, 0] for g in GROUPS}
    for name, p in model.named_parameters():
        row = rows[group_of(name)]
        row[0] += p.numel() if p.requires_grad else 0
        row[1] += p.numel()
        row[2] += p.numel() * p.element_size()
    out = [(g, *r) for g, r in rows.items() if r[1]]
    return [*out, ("all", *(sum(r[i] for _, *r in out) for i in range(3)))]  # type: ignore[list-item]


def step(model: Captioner, batch: int, text_tokens: int) -> tuple[int, int]:
    """(bytes saved for backward, FLOPs of forward + backward) of one bf16-autocast training step of `batch`."""
    size = model.preprocessing.input_size[-1]
    images = torch.randn(batch, 3, size, size)
    ids = torch.randint(3, model.config.vocab_size, (batch, text_tokens))
    storages: dict[int, int] = {}  # a tensor saved by several ops is held once

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):  # weights are counted as weights (their bf16 casts are not)
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.loss(images, ids, ids)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values()), counter.get_total_flops()


def report(name: str, model: Captioner, batch: int, text_tokens: int) -> None:
    rows = parameter_rows(model)
    print(f"\n### {name}\n")
    print("| group | trainable | total | held (MiB) |\n|---|---:|---:|---:|")
    for group, trainable, total, held in rows:
        print(f"| {group} | {trainable:,} | {total:,} | {held / 2**20:,.0f} |")
    trainable, held = rows[-1][1], rows[-1][3]
    (one, flops), (three, _) = step(model, 1, text_tokens), step(model, 3, text_tokens)
    per_image = (three - one) / 2  # what grows with the batch; the rest (bf16 casts of trained weights) does not
    activations = one - per_image + per_image * batch
    print(
        f"\nper GPU at batch {batch}: weights {held / GiB:.2f} GiB + gradients {4 * trainable / GiB:.2f} GiB + "
        f"AdamW states {8 * trainable / GiB:.2f} GiB (fp32) + saved activations {activations / GiB:.2f} GiB "
        f"({per_image / 2**20:.1f} MiB per image, {(one - per_image) / 2**20:.0f} MiB per step) = "
        f"{(held + 12 * trainable + activations) / GiB:.2f} GiB"
    )
    print(
        f"FLOPs per training step: {flops * batch / 1e12:.2f} TFLOP at batch {batch} "
        f"({flops / 1e9:.1f} GFLOP per image, forward + backward)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/recipe_cost.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs/coco_siglip_smollm2.yaml")
    parser.add_argument("--text-tokens", type=int, default=24, help="caption length of a batch (padded)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config, finetuning, batch = recipe(args.config, save_lm(Path(tmp)))
        print(
            f"{args.config.name}: {config.encoder_name} + SmolLM2-135M shapes; finetune: freeze_lm="
            f"{finetuning.freeze_lm}, LoRA {finetuning.lora.groups} r={finetuning.lora.r}, frozen LM in "
            f"{finetuning.frozen_lm_dtype}; captions of {args.text_tokens} tokens"
        )
        if finetuning.encoder_frozen_epochs:
            report(
                f"the first {finetuning.encoder_frozen_epochs} epoch(s): vision encoder frozen",
                built(config, finetuning, vision_trains=False),
                batch,
                args.text_tokens,
            )
        report("then: vision encoder trained", built(config, finetuning, vision_trains=True), batch, args.text_tokens)
    return 0
