"""CaptionerModule: the LightningModule that trains a `Captioner` (one `_shared_step` for every stage)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

from captioner.config import CaptionerConfig
from captioner.data.shapes import ShapeObject, score
from captioner.generate import GenerationConfig, generate
from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer

# our checkpoints' hyperparameters hold these dataclasses: allow them under torch.load(weights_only=True), so that
# resuming never needs arbitrary unpickling
torch.serialization.add_safe_globals([CaptionerConfig, GenerationConfig])


class CaptionerModule(L.LightningModule):
    """Trains a Captioner with AdamW, warmup + cosine schedule; validation reports loss and caption quality.

    Args:
        config: the model (see `CaptionerConfig`); `vocab_size` is taken from the data's tokenizer.
        vocab_size: set by the CLI from the DataModule's tokenizer; overrides `config.vocab_size`.
        lr: peak learning rate after `warmup_steps`, decayed by cosine to `lr * min_lr_ratio`.
        generate_batches: validation/test batches to caption (greedy) for caption metrics and samples;
            -1 captions every batch.
        num_samples: sample captions shown and logged each validation.
        generation: decoding options for validation/test/predict captions (default greedy).
        init_from: a model package to fine-tune; its config, weights and tokenizer are used (`config` is ignored).
        finetune: which parameters train: `full`; `freeze_encoder` (the timm backbone is frozen, its projection
            trains); `cross_attention` (only the cross-attention layers and every LayerNorm train).
        encoder_lr_mult: the timm backbone's learning rate is `lr * encoder_lr_mult`.
        encoder_layer_decay: layer-wise learning-rate decay in the backbone (timm's `param_groups_layer_decay`):
            the top block learns at the backbone rate, each block below at `decay` times the one above; 1.0 is off.
        encoder_frozen_epochs: the backbone is frozen for this many epochs, then trains.
        caption_metrics_every_n_epochs: every N epochs, validation scores the captions of its `generate_batches`
            subset with BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (pycocoevalcap), logged as `val/CIDEr-D` etc., so
            that `ModelCheckpoint(monitor="val/CIDEr-D", mode="max")` keeps the best model; 0 is off.
        max_nonfinite_steps: a step whose loss is NaN or infinite is skipped (no update) and counted
            (`train/skipped_nonfinite`); this many in a row stop the run with a message.
        reinit_unused_tokens: when fine-tuning, re-initialise the embeddings of tokens that the package's own
            training captions never used (listed in its training.json). Those rows hold no learned meaning: with
            tied embeddings, Adam moves every unused row along the same direction at every step, so they end up
            collapsed onto one large vector that new words would first have to climb out of.
    """

    def __init__(
        self,
        config: CaptionerConfig | None = None,
        vocab_size: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        generate_batches: int = 2,
        num_samples: int = 4,
        generation: GenerationConfig | None = None,
        init_from: str | None = None,
        finetune: Literal["full", "freeze_encoder", "cross_attention"] = "full",
        encoder_lr_mult: float = 1.0,
        encoder_layer_decay: float = 1.0,
        encoder_frozen_epochs: int = 0,
        reinit_unused_tokens: bool = True,
        caption_metrics_every_n_epochs: int = 0,
        max_nonfinite_steps: int = 10,
        feature_cache: str | None = None,
        feature_cache_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16",
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
        tf32: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if init_from:  # fine-tuning: architecture, weights (and, via the CLI, tokenizer) from a model package
            self.model, _ = Captioner.from_pretrained(init_from)
            self.model.train()
            config = self.model.config
            if reinit_unused_tokens and finetune != "cross_attention":  # only where the embeddings then train
                reinit_unused_embeddings(self.model, init_from)
            if vocab_size is not None and vocab_size != config.vocab_size:
                raise ValueError(
                    f"the data's tokenizer has {vocab_size} tokens but {init_from} was trained with "
                    f"{config.vocab_size}; fine-tuning keeps the package's tokenizer (leave data.tokenizer_path unset)"
                )
        else:
            config = config or CaptionerConfig.from_name("shapes")
            if config.decoder_init_from:
                from captioner.gpt2 import gpt2_config

                config = gpt2_config(config)
                if vocab_size is not None and vocab_size != config.vocab_size:
                    raise ValueError(f"the data's tokenizer has {vocab_size} tokens, GPT-2 {config.vocab_size}")
            elif vocab_size is not None:
                config.vocab_size = vocab_size
            self.model = Captioner(config)
        self.config = config
        self.finetune, self.encoder_lr_mult = finetune, encoder_lr_mult
        self.encoder_layer_decay, self.encoder_frozen_epochs = encoder_layer_decay, encoder_frozen_epochs
        self.caption_metrics_every_n_epochs = caption_metrics_every_n_epochs
        self.max_nonfinite_steps = max_nonfinite_steps
        self.skipped_nonfinite, self._nonfinite_in_a_row = 0, 0
        apply_finetune_policy(self.model, finetune)
        self.lr, self.weight_decay, self.betas = lr, weight_decay, betas
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.generate_batches, self.num_samples = generate_batches, num_samples
        self.generation = generation or GenerationConfig()
        self.feature_cache, self.feature_cache_dtype = feature_cache, feature_cache_dtype
        self.compile, self.compile_options, self.tf32 = compile, compile_options or {}, tf32
        self._compiled_loss = None  # torch.compile(model.loss), made in setup when `compile`
        self._outputs: list[dict[str, Any]] = []

    @property
    def tokenizer(self) -> CaptionTokenizer:
        return self.trainer.datamodule.tokenizer

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(images, input_ids)

    # ---- steps -------------------------------------------------------------------------------------------------------
    def _shared_step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> torch.Tensor:
        loss_fn = self._compiled_loss or self.model.loss
        if "features" in batch:  # cached patch tokens (B, N, De): the backbone does not run
            loss = loss_fn(None, batch["input_ids"], batch["labels"], batch["features"])
        else:
            loss = loss_fn(batch["images"], batch["input_ids"], batch["labels"])
        B = batch["input_ids"].size(0)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=B, sync_dist=stage != "train")
        if stage != "train" and (self.generate_batches < 0 or batch_idx < self.generate_batches):
            self._outputs.extend(self._caption_batch(batch))
        return loss

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        max_length = getattr(dm, "max_length", None)
        if max_length is not None and max_length > self.config.block_size:
            raise ValueError(
                f"data max_length={max_length} is longer than the model's block_size={self.config.block_size}; "
                "lower data.init_args.max_length or raise model.config.block_size"
            )
        if self.tf32 and self.trainer.strategy.root_device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        if self.compile and stage == "fit":
            if dm is not None and hasattr(dm, "pad_to_max_length"):
                dm.pad_to_max_length = True  # fixed caption length: one graph, no recompiles
            self._compiled_loss = torch.compile(self.model.loss, **{"dynamic": False, **self.compile_options})

    def on_fit_start(self) -> None:
        if self.feature_cache:
            from captioner.caching import prepare

            prepare(self, self.feature_cache, self.feature_cache_dtype)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """RNG states travel with the checkpoint (dropout and anything else random resume where they were)."""
        checkpoint["captioner_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("captioner_rng")
        if state:
            torch.set_rng_state(state["torch"])
            if state["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            random.setstate(state["python"])

    def on_train_epoch_start(self) -> None:
        if self.encoder_frozen_epochs > 0 and self.finetune == "full":
            frozen = self.current_epoch < self.encoder_frozen_epochs
            for p in self.model.encoder.backbone.parameters():
                p.requires_grad_(not frozen)  # frozen parameters get no gradient, so AdamW leaves them as they are

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch failed to decode (counted by the collator)
            return None
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("lr", lr, prog_bar=False)
        loss = self._shared_step(batch, "train", batch_idx)
        if torch.isfinite(loss):
            self._nonfinite_in_a_row = 0
            return loss
        self.skipped_nonfinite += 1
        self._nonfinite_in_a_row += 1
        self.log("train/skipped_nonfinite", float(self.skipped_nonfinite))
        if self._nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise FloatingPointError(
                f"the loss was not finite for {self._nonfinite_in_a_row} steps in a row (last: step "
                f"{self.global_step}, learning rate {lr:.3g}). Try a lower model.lr or more warmup_steps, "
                "gradient clipping (trainer.gradient_clip_val), precision 32 or bf16-mixed instead of 16-mixed, "
                "and check the data for empty or broken examples."
            )
        return None  # Lightning skips backward and the optimizer step

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is not None:
            self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is not None:
            self._shared_step(batch, "test", batch_idx)

    def predict_step(self, batch: dict[str, Any] | None, batch_idx: int) -> list[dict[str, Any]]:
        return [] if batch is None else self._caption_batch(batch)

    def _caption_batch(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        tok = self.tokenizer
        hyps = generate(self.model, batch["images"], tok, self.generation)
        return [
            {"index": i, "caption": tok.decode(h[0].tokens), "score": h[0].score, "references": refs, "objects": objs}
            for i, h, refs, objs in zip(batch["index"], hyps, batch["references"], batch["objects"], strict=True)
        ]

    def on_validation_epoch_end(self) -> None:
        self._caption_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._caption_epoch_end("test")

    def _caption_epoch_end(self, stage: str) -> None:
        outputs, self._outputs = self._outputs, []
        if not outputs:
            return
        if all(o["objects"] is not None for o in outputs):
            scenes = [[ShapeObject(d["size"], d["color"], d["shape"], 0, 0) for d in o["objects"]] for o in outputs]
            metrics = score([o["caption"] for o in outputs], scenes)
            self.log(f"{stage}/exact_match", metrics["exact_match"], prog_bar=True)
            self.log(f"{stage}/attribute_accuracy", metrics["attribute_accuracy"])
        every = self.caption_metrics_every_n_epochs
        if every > 0 and (stage != "val" or self.current_epoch % every == 0):
            from captioner.metrics import caption_metrics

            scores = caption_metrics(
                {str(n): o["caption"] for n, o in enumerate(outputs)},
                {str(n): o["references"] for n, o in enumerate(outputs)},
            )
            for name, value in scores.items():
                self.log(f"{stage}/{name}", value, prog_bar=name == "CIDEr-D")
        if stage == "val" and not self.trainer.sanity_checking:
            self._log_samples(outputs[: self.num_samples])  # every rank with outputs: it holds a collective

    def _log_samples(self, samples: list[dict[str, Any]]) -> None:
        log_dir = self.trainer.log_dir  # on every rank: a collective (a broadcast) under DDP
        if not self.trainer.is_global_zero:
            return
        lines = [f"  [{s['index']}] {s['caption']!r}  (reference: {s['references'][0]!r})" for s in samples]
        self.print(f"step {self.global_step} sample captions:\n" + "\n".join(lines))
        experiment = getattr(self.logger, "experiment", None)
        if hasattr(experiment, "add_text"):  # TensorBoard
            experiment.add_text("val/samples", "\n\n".join(lines), self.global_step)
        if log_dir:
            path = Path(log_dir) / "samples.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                for s in samples:
                    f.write(json.dumps({"step": self.global_step, "index": s["index"], "caption": s["caption"]}) + "\n")

    # ---- optimisation ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        groups = parameter_groups(
            self.model, self.weight_decay, self.lr, self.encoder_lr_mult, self.encoder_layer_decay,
            include_frozen_backbone=self.encoder_frozen_epochs > 0,
        )  # fmt: skip
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, fused=self._use_fused())
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = warmup_cosine(self.warmup_steps, total, self.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _use_fused(self) -> bool:
        """Fused AdamW on CUDA, except where it cannot be combined with gradient clipping: with a loss scaler
        (16-mixed: the fused step unscales inside) and under FSDP (sharded gradients need FSDP's own clipping)."""
        if self.device.type != "cuda" or not self.trainer.gradient_clip_val:
            return self.device.type == "cuda"
        return (
            getattr(self.trainer.precision_plugin, "scaler", None) is None
            and "fsdp" not in type(self.trainer.strategy).__name__.lower()
        )

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Lightning refuses to clip for a fused optimizer because it might unscale inside; without a loss scaler
        (bf16-mixed, 32) the gradients are the true ones, so they are clipped here, as the unfused path would.
        Under FSDP the norm is taken by FSDP over the sharded gradients."""
        fsdp = self._trainer is not None and "fsdp" in type(self._trainer.strategy).__name__.lower()
        if gradient_clip_val and fsdp and gradient_clip_algorithm != "value":
            # Lightning clips FSDP gradients only by value (Lightning-AI/pytorch-lightning#19235); the norm of
            # sharded gradients needs the FSDP module's own clip_grad_norm_ (trainer.model is the wrapped module)
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        if gradient_clip_val and getattr(optimizer, "defaults", {}).get("fused"):
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)


def parameter_groups(
    model: Captioner,
    weight_decay: float,
    lr: float,
    encoder_lr_mult: float = 1.0,
    encoder_layer_decay: float = 1.0,
    include_frozen_backbone: bool = False,
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices of Linear/Conv layers only (none on norms, biases, embeddings and
    position tokens); the timm backbone at `lr * encoder_lr_mult`, scaled per layer when `encoder_layer_decay`
    is below 1. Frozen parameters are left out, except the backbone's when it is frozen only for a while."""
    backbone = model.encoder.backbone
    in_backbone = {id(p) for p in backbone.parameters()}

    def wanted(p: nn.Parameter) -> bool:
        return p.requires_grad or (include_frozen_backbone and id(p) in in_backbone)

    groups = _decay_groups(model, weight_decay, lr, lambda p: wanted(p) and id(p) not in in_backbone)
    if encoder_layer_decay == 1.0:
        return groups + _decay_groups(backbone, weight_decay, lr * encoder_lr_mult, wanted)
    from timm.optim._param_groups import param_groups_layer_decay

    for g in param_groups_layer_decay(backbone, weight_decay, layer_decay=encoder_layer_decay):
        params = [p for p in g["params"] if wanted(p)]
        if params:
            scale = lr * encoder_lr_mult * g["lr_scale"]
            groups.append({"params": params, "weight_decay": g["weight_decay"], "lr": scale})
    return groups


def _decay_groups(module: nn.Module, weight_decay: float, lr: float, keep) -> list[dict[str, Any]]:  # noqa: ANN001
    matrices = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in module.parameters():  # parameters() yields tied weights once
        if keep(p):
            (decay if id(p) in matrices and id(p) not in embeddings else no_decay).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": lr} for ps, wd in ((decay, weight_decay), (no_decay, 0.0)) if ps]


def apply_finetune_policy(model: Captioner, policy: str) -> None:
    """Set `requires_grad` for a fine-tuning policy (see `CaptionerModule`)."""
    if policy not in ("full", "freeze_encoder", "cross_attention"):
        raise ValueError(f"unknown finetune policy {policy!r}; choose full, freeze_encoder or cross_attention")
    for name, p in model.named_parameters():
        if policy == "full":
            p.requires_grad_(True)
        elif policy == "freeze_encoder":
            p.requires_grad_(not name.startswith("encoder.backbone."))
        else:
            p.requires_grad_(".cross." in name or _is_norm(model, name))


def _is_norm(model: nn.Module, param_name: str) -> bool:
    module = model.get_submodule(param_name.rsplit(".", 1)[0])
    return isinstance(module, nn.LayerNorm)


def warmup_cosine(warmup: int, total: int, min_ratio: float):  # noqa: ANN201
    """LR multiplier: linear warmup to 1, then cosine to `min_ratio` at `total` steps."""

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def reinit_unused_embeddings(model: Captioner, package: str) -> int:
    """Re-initialise the token embeddings the package never trained, drawn like the trained ones (per-dimension
    mean and standard deviation of the used rows, as transformers' mean-resizing does for new tokens), so that new
    words start on the scale of the known ones rather than far off or collapsed."""
    import json

    info_file = Path(package) / "training.json"
    if not info_file.is_file():
        return 0
    used = json.loads(info_file.read_text(encoding="utf-8")).get("used_token_ids")
    if not used or len(used) < 2:
        return 0
    weight = model.decoder.wte.weight  # tied with lm_head
    unused = torch.ones(weight.size(0), dtype=torch.bool, device=weight.device)
    unused[torch.tensor(used, dtype=torch.long, device=weight.device)] = False
    with torch.no_grad():
        known = weight[~unused]  # (U, C)
        noise = torch.randn(int(unused.sum()), weight.size(1), dtype=weight.dtype, device=weight.device)
        weight[unused] = known.mean(0) + noise * known.std(0)
    return int(unused.sum())
