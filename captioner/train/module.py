"""CaptionerModule: the LightningModule that trains a `Captioner` (one `_shared_step` for every stage); building the
model is `train.build`, optimisation `train.optim`, the data is handed over by `train.connect`."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig
from captioner.tokenizer import CaptionTokenizer
from captioner.train.build import build_model, grow_vocab
from captioner.train.checkpoint_io import check_fits, restore_rng, rng_state
from captioner.train.optim import NonFiniteSteps, clip_gradients, configure_adamw
from captioner.train.samples import caption_rows, report_captions
from captioner.train.scst import SCST, SelfCritical

# our checkpoints' hyperparameters hold these dataclasses: allow them under torch.load(weights_only=True), so that
# resuming never needs arbitrary unpickling
torch.serialization.add_safe_globals([CaptionerConfig, GenerationConfig])


class CaptionerModule(L.LightningModule):
    """Trains a Captioner with AdamW, warmup + cosine schedule; validation reports loss and caption quality.

    Args:
        config: the model (see `CaptionerConfig`); `vocab_size` is taken from the data's tokenizer.
        vocab_size: set by the CLI from the DataModule's tokenizer; overrides `config.vocab_size`.
        lr: peak learning rate after `warmup_steps`, decayed by cosine to `lr * min_lr_ratio`.
        generate_batches: validation/test batches to caption for caption metrics and samples (-1: all).
        num_samples: sample captions shown and logged each validation.
        generation: decoding options for validation/test/predict captions (default greedy).
        init_from: a model package to fine-tune; its config, weights and tokenizer are used (`config` is ignored).
        finetune: which parameters train: `full`; `freeze_encoder` (the timm backbone is frozen, its projection
            trains); `cross_attention` (only the cross-attention layers and every LayerNorm train).
        encoder_lr_mult: the timm backbone's learning rate is `lr * encoder_lr_mult`.
        encoder_layer_decay: layer-wise learning-rate decay in the backbone (timm's `param_groups_layer_decay`):
            the top block learns at the backbone rate, each block below at `decay` times the one above; 1.0 is off.
        encoder_frozen_epochs: the backbone is frozen for this many epochs, then trains.
        reinit_unused_tokens: when fine-tuning, re-initialise the embeddings of tokens that the package's own
            training captions never used (see `train.build.reinit_unused_embeddings`).
        caption_metrics_every_n_epochs: every N epochs, validation scores the captions of its `generate_batches`
            subset with BLEU-1..4, METEOR, ROUGE-L and CIDEr-D (pycocoevalcap), logged as `val/CIDEr-D` etc., so
            that `ModelCheckpoint(monitor="val/CIDEr-D", mode="max")` keeps the best model; 0 is off.
        max_nonfinite_steps: steps whose loss is NaN or infinite are skipped and counted; this many in a row stop.
        feature_cache: a folder for the frozen encoder's patch tokens of every training image (`train.feature_cache`).
        compile: torch.compile the training loss (captions padded to `data.max_length`: one graph); tf32: on CUDA.
        extend_vocab: fine-tuning on text the package's tokenizer has not seen: add up to this many tokens learned
            from the training captions (the CLI passes it to the data); new embeddings start from their pieces'.
        block_size: grow the package's positions to this many tokens (raise `data.max_length` with it).
        scst: self-critical training, a second stage that optimises CIDEr-D (`train.scst`; configs/scst.yaml).
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
        extend_vocab: int = 0,
        block_size: int | None = None,
        scst: SCST | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(
            config, vocab_size, init_from, finetune, reinit_unused_tokens, extend_vocab, block_size
        )
        self.config = self.model.config
        self.finetune, self.encoder_frozen_epochs = finetune, encoder_frozen_epochs
        self.generate_batches, self.num_samples = generate_batches, num_samples
        self.generation = generation or GenerationConfig()
        self.caption_metrics_every_n_epochs = caption_metrics_every_n_epochs
        self.nonfinite = NonFiniteSteps(max_nonfinite_steps)
        self.self_critical = SelfCritical(scst) if scst is not None else None  # fitted by `connect`
        self.feature_cache, self.feature_cache_dtype = feature_cache, feature_cache_dtype
        self.compile, self.compile_options, self.tf32 = compile, compile_options or {}, tf32
        self._compiled_loss = None  # torch.compile(model.loss), made in setup when `compile`
        self.tokenizer: CaptionTokenizer | None = None  # handed over by `connect`
        self._outputs: list[dict[str, Any]] = []
        # Lightning's model summary measures FLOPs on this: one image and a caption of block_size tokens
        self.example_input_array = (
            torch.zeros(1, *self.model.preprocessing.input_size),  # (1, C, H, W)
            torch.zeros(1, self.config.block_size, dtype=torch.long),  # (1, T)
        )

    def connect(self, tokenizer: CaptionTokenizer) -> None:
        """What the module needs from the data: its tokenizer (captions in validation, the exported package); an
        extended one (`extend_vocab`) grows the embeddings to its size."""
        self.tokenizer = tokenizer
        if tokenizer.vocab_size > self.model.config.vocab_size:
            grow_vocab(self.model, tokenizer.pieces(self.model.config.vocab_size))
            self.config = self.model.config

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:  # (B, T, V) logits
        return self.model(images, input_ids)

    def setup(self, stage: str) -> None:
        if self.tokenizer is None:
            raise RuntimeError("CaptionerModule has no tokenizer: call captioner.train.connect(module, datamodule)")
        if self.tf32 and self.trainer.strategy.root_device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        if self.compile and stage == "fit":
            self._compiled_loss = torch.compile(self.model.loss, **{"dynamic": False, **self.compile_options})

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
            self._outputs.extend(caption_rows(self.model, self.tokenizer, batch, self.generation))
        return loss

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch failed to decode (counted by the collator)
            return None
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("lr", lr, prog_bar=False)
        scst = self.self_critical
        loss = scst.training_step(self, batch) if scst else self._shared_step(batch, "train", batch_idx)
        if self.nonfinite.finite(loss, self.global_step, lr):
            return loss
        self.log("train/skipped_nonfinite", float(self.nonfinite.skipped))
        return None  # Lightning skips backward and the optimizer step

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is not None:
            self._shared_step(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        if batch is not None:
            self._shared_step(batch, "test", batch_idx)

    def predict_step(self, batch: dict[str, Any] | None, batch_idx: int) -> list[dict[str, Any]]:
        return [] if batch is None else caption_rows(self.model, self.tokenizer, batch, self.generation)

    def on_validation_epoch_end(self) -> None:
        self._caption_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._caption_epoch_end("test")

    def _caption_epoch_end(self, stage: str) -> None:
        outputs, self._outputs = self._outputs, []
        report_captions(self, stage, outputs, self.caption_metrics_every_n_epochs, self.num_samples)

    # ---- state that travels with checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["captioner_rng"] = rng_state()  # dropout and anything else random resume where they were

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_fits(self.trainer.ckpt_path if self._trainer else "the checkpoint", checkpoint["state_dict"],
                   self.state_dict())  # fmt: skip
        if checkpoint.get("captioner_rng"):
            restore_rng(checkpoint["captioner_rng"])

    # ---- optimisation ------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        if self.encoder_frozen_epochs > 0 and self.finetune == "full":  # frozen: no gradient, AdamW leaves them
            self.model.encoder.backbone.requires_grad_(self.current_epoch >= self.encoder_frozen_epochs)
        # Lightning keeps the modules' modes (it never calls train() itself): frozen BatchNorm layers to eval mode,
        # thawed ones back to training; Lightning restores these modes after each validation
        self.model.encoder.train(self.training)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self, self.model, self.hparams)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    def provenance(self) -> dict[str, Any]:
        """How this run makes its package, for its training.json: objective, start package, optimiser settings."""
        from captioner.train.provenance import provenance

        return provenance(self.hparams, self.self_critical)
