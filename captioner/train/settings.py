"""The groups of `CaptionerModule`'s arguments: what each YAML section under `model:` holds (LightningCLI reads
dataclasses as nested options: `model.optimizer.lr`, `--model.tokenizer.extend 64`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from captioner.generate import GenerationConfig


@dataclass
class TokenizerSource:
    """Where the tokenizer of a run comes from, resolved once (`train.vocabulary.resolve_tokenizer`) before the
    model is built; the model's `config.vocab_size` is always the resolved tokenizer's size.

    Args:
        path: a tokenizer to use as it is: a `tokenizer.json` file, or a Hugging Face tokenizer (Hub name or
            folder). Unset, the start decides: the package's own tokenizer (`init_from`), the language model's
            (`config.decoder_init_from`), or else a byte-level BPE trained on the training captions.
        vocab_size: the size of the BPE trained on the training captions (at most; a small corpus gives fewer).
        train_captions: the first N training captions that BPE learns from.
        extend: add up to this many tokens learned from the training captions to a package's or a language
            model's tokenizer (fine-tuning on words it splits into many pieces); each new token's embedding starts
            as the mean of its pieces'.
    """

    path: str | None = None
    vocab_size: int = 4096
    train_captions: int = 100_000
    extend: int = 0


@dataclass
class Optimizer:
    """AdamW with linear warm-up and a cosine decay (`train.optim`).

    Args:
        lr: peak learning rate after `warmup_steps`, decayed by cosine to `lr * min_lr_ratio`.
        encoder_lr_mult: the timm backbone's learning rate is `lr * encoder_lr_mult`.
        encoder_layer_decay: layer-wise learning-rate decay in the backbone (timm's `param_groups_layer_decay`):
            the top block learns at the backbone rate, each block below at `decay` times the one above; 1.0 is off.
        max_nonfinite_steps: steps whose loss is NaN or infinite are skipped and counted; this many in a row stop.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    encoder_lr_mult: float = 1.0
    encoder_layer_decay: float = 1.0
    max_nonfinite_steps: int = 10


@dataclass
class Lora:
    """LoRA adapters (peft) on named groups of Linear layers (`train.lora`): each adapted Linear's weight is frozen
    and a trained low-rank update `alpha / r * B @ A` is added to it; the exported package holds the merged weights.

    Args:
        groups: any of `lm_attention` (the language model's fused q/k/v projection `attn.c_attn` and its output
            `attn.c_proj`), `lm_mlp` (its MLP: `mlp.c_fc`, fused gate and up for a gated MLP, and `mlp.c_proj`),
            `cross_attention` (the inserted cross-attention layers and cross MLPs), `vision` (every Linear of the
            timm backbone). The LM groups need a pretrained language model (`config.decoder_init_from`). On a fused
            Linear one adapter covers all its parts: q, k and v share `A` and one rank `r` (peft on GPT-2's `c_attn`).
        r: the rank of each update.
        alpha: the update's scale is `alpha / r`.
        dropout: dropout on each adapter's input.
    """

    groups: list[str] = field(default_factory=list)
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0


@dataclass
class Finetuning:
    """Which parameters train, and how a start package is adapted.

    Args:
        policy: `full`; `freeze_encoder` (the timm backbone is frozen, its projection trains); `cross_attention`
            (only the cross-attention layers, with their norms, gates and cross MLPs, and every norm train).
        freeze_lm: also freeze the pretrained language model's tensors (embeddings, its blocks' self-attention, MLPs
            and norms, the final norm and the head): the inserted layers and gates, the image projection and (unless
            the policy freezes it) the vision encoder train. With `policy: freeze_encoder` this is the Flamingo
            recipe. A flag beside `policy` rather than a policy value, because it combines with each policy. It
            needs a language model start (`config.decoder_init_from`, or a package made from one).
        lora: LoRA adapters on named groups (`Lora`); applied before the policy, which then sets the rest.
        frozen_lm_dtype: `bfloat16` holds the frozen language model tensors in bfloat16 (half their memory; meant
            for GPUs) while the trained ones stay float32; it needs `trainer.precision: bf16-mixed`.
        encoder_frozen_epochs: the backbone is frozen for this many epochs, then trains.
        reinit_unused_tokens: when fine-tuning, re-initialise the embeddings of tokens that the package's own
            training captions never used (see `train.build.reinit_unused_embeddings`).
        block_size: grow the package's positions to this many tokens (raise `data.captions.max_length` with it).
    """

    policy: Literal["full", "freeze_encoder", "cross_attention"] = "full"
    freeze_lm: bool = False
    lora: Lora = field(default_factory=Lora)
    frozen_lm_dtype: Literal["float32", "bfloat16"] = "float32"
    encoder_frozen_epochs: int = 0
    reinit_unused_tokens: bool = True
    block_size: int | None = None

    def check_precision(self, precision: str, stage: str) -> None:
        """Refuse a frozen LM held in bfloat16 where a `stage` (fit, validate, test, predict) would not run under
        bfloat16 autocast: its float32 activations would meet bfloat16 weights."""
        if self.frozen_lm_dtype == "bfloat16" and precision != "bf16-mixed":
            raise ValueError(
                "finetune.frozen_lm_dtype=bfloat16 computes under bfloat16 autocast: set trainer.precision to "
                f"bf16-mixed (it is {precision}, to {stage})"
            )


@dataclass
class Validation:
    """What validation and test report besides the loss.

    Args:
        generate_batches: validation/test batches to caption for caption metrics and samples (-1: all).
        num_samples: sample captions shown and logged each validation.
        caption_metrics_every_n_epochs: every N epochs, validation scores the captions of its `generate_batches`
            subset with BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (pycocoevalcap), logged as `val/CIDEr-D` etc., so
            that `ModelCheckpoint(monitor="val/CIDEr-D", mode="max")` keeps the best model; 0 is off.
        generation: decoding options for validation/test/predict captions (default greedy).
    """

    generate_batches: int = 2
    num_samples: int = 4
    caption_metrics_every_n_epochs: int = 0
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class Speed:
    """Options that change how fast a step runs, not what it computes.

    Args:
        feature_cache: a folder for the frozen encoder's patch tokens of every training image
            (`train.feature_cache`).
        compile: torch.compile the training loss (captions padded to `data.captions.max_length`: one graph).
        tf32: TF32 matrix products on CUDA.
        activation_checkpointing: recompute each decoder block's activations in the backward pass instead of
            keeping them (`torch.utils.checkpoint`, training only): less memory for about one more forward.
    """

    feature_cache: str | None = None
    feature_cache_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    compile: bool = False
    compile_options: dict[str, Any] | None = None
    tf32: bool = True
    activation_checkpointing: bool = False

    def apply(self, model: Any, device_type: str, stage: str) -> Callable[..., Any] | None:
        """Set these options on `model` (a Captioner) for `stage`; the compiled training loss when `compile`."""
        import torch

        if self.tf32 and device_type == "cuda":
            torch.set_float32_matmul_precision("high")
        model.decoder.activation_checkpointing = self.activation_checkpointing
        if self.compile and stage == "fit":
            return torch.compile(model.loss, **{"dynamic": False, **(self.compile_options or {})})
        return None


SETTINGS = (TokenizerSource, Optimizer, Lora, Finetuning, Validation, Speed)
