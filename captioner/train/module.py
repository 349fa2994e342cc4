"""CaptionerModule: the LightningModule that trains a `Captioner` (one `_shared_step` for every stage); building the
model is `train.build`, optimisation `train.optim`, the data is handed over by `train.connect`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig
from captioner.hub import locate_package
from captioner.model import Captioner
from captioner.package import Origin
from captioner.tokenizer import CaptionTokenizer
from captioner.train.build import build_model
from captioner.train.checkpoint_io import ExactResume
from captioner.train.optim import NonFiniteSteps, clip_gradients, configure_adamw
from captioner.train.parameters import trainable_table
from captioner.train.samples import DataScores, caption_rows, report_captions
from captioner.train.scst import SCST, SelfCritical
from captioner.train.settings import SETTINGS, Finetuning, Optimizer, Speed, TokenizerSource, Validation

# our checkpoints' hyperparameters hold these dataclasses: allow them under torch.load(weights_only=True), so that
# resuming never needs arbitrary unpickling
torch.serialization.add_safe_globals([CaptionerConfig, GenerationConfig, SCST, *SETTINGS])


class CaptionerModule(ExactResume):
    """Trains a Captioner with AdamW, warmup + cosine schedule; validation reports loss and caption quality.

    The model is built in `connect`, once the run's tokenizer is resolved (`train.connect` does both).

    Args:
        config: the model (see `CaptionerConfig`); its `vocab_size` is the tokenizer's.
        init_from: a model package to fine-tune (a folder, or a Hub repo id `org/name[@revision]`): its config,
            weights and tokenizer are used (`config` is ignored).
        tokenizer: where the tokenizer comes from (`TokenizerSource`: a file, the package's, the language model's,
            or trained on the captions; extended).
        optimizer, finetune, validation, speed: `train.settings` (`Optimizer`, `Finetuning`, `Validation`, `Speed`).
        scst: self-critical training, a second stage that optimises CIDEr-D (`train.scst`; configs/scst.yaml).
    """

    def __init__(
        self,
        config: CaptionerConfig | None = None,
        init_from: str | None = None,
        tokenizer: TokenizerSource | None = None,
        optimizer: Optimizer | None = None,
        finetune: Finetuning | None = None,
        validation: Validation | None = None,
        speed: Speed | None = None,
        scst: SCST | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.architecture, self.init_from = config, init_from
        self.tokenizer_source = tokenizer or TokenizerSource()
        self.optimization, self.finetuning = optimizer or Optimizer(), finetune or Finetuning()
        self.validation, self.speed = validation or Validation(), speed or Speed()
        self.nonfinite = NonFiniteSteps(self.optimization.max_nonfinite_steps)
        self.self_critical = SelfCritical(scst) if scst is not None else None  # fitted by `connect`
        self.package: Path | None = None  # the folder of `init_from`, once resolved, and where it came from
        self.origin: Origin | None = None
        self.model: Captioner | None = None  # built by `connect`
        self.tokenizer: CaptionTokenizer | None = None
        self.data_scores: DataScores | None = None  # the data's own caption scores, handed over by `connect`
        self._compiled_loss: Callable[..., torch.Tensor] | None = None  # torch.compile(model.loss) when `speed.compile`
        self._outputs: list[dict[str, Any]] = []

    def connect(self, tokenizer: CaptionTokenizer) -> None:
        """Build the model for the run's resolved tokenizer (`train.vocabulary.resolve_tokenizer`), sized from it;
        a second call with a tokenizer of the same size keeps the model."""
        if self.model is not None and self.model.config.vocab_size == tokenizer.vocab_size:
            self.tokenizer = tokenizer
            return
        self.model = build_model(
            self.architecture, tokenizer, self.start_package(), self.finetuning, self.tokenizer_source.extend
        )
        self.tokenizer, self.config = tokenizer, self.model.config
        # Lightning's model summary measures FLOPs on this: one image and a caption of block_size tokens
        self.example_input_array = (
            torch.zeros(1, *self.model.preprocessing.input_size),  # (1, C, H, W)
            torch.zeros(1, self.config.block_size, dtype=torch.long),  # (1, T)
        )

    def start_package(self) -> Path | None:
        """The folder of `init_from` (a Hub repo id is downloaded once, into the Hugging Face cache)."""
        if self.init_from and self.package is None:
            self.package, self.origin = locate_package(self.init_from)
        return self.package

    def built(self) -> tuple[Captioner, CaptionTokenizer]:
        """The model and its tokenizer; RuntimeError until `connect` has built them."""
        if self.model is None or self.tokenizer is None:
            raise RuntimeError("CaptionerModule has no model yet: call captioner.train.connect(module, datamodule)")
        return self.model, self.tokenizer

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:  # (B, T, V) logits
        return self.built()[0](images, input_ids)

    def setup(self, stage: str) -> None:
        self.finetuning.check_precision(str(self.trainer.precision), stage)
        self._compiled_loss = self.speed.apply(self.built()[0], self.trainer.strategy.root_device.type, stage)

    def on_fit_start(self) -> None:
        rank_zero_info(trainable_table(self.built()[0]))

    # ---- steps -------------------------------------------------------------------------------------------------------
    def _shared_step(self, batch: dict[str, Any], stage: str, batch_idx: int) -> torch.Tensor:
        model, tokenizer = self.built()
        loss_fn = self._compiled_loss or model.loss
        if "features" in batch:  # cached patch tokens (B, N, De): the backbone does not run
            loss = loss_fn(None, batch["input_ids"], batch["labels"], batch["features"])
        else:
            loss = loss_fn(batch["images"], batch["input_ids"], batch["labels"])
        B = batch["input_ids"].size(0)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=B, sync_dist=stage != "train")
        wanted = self.validation.generate_batches
        if stage != "train" and (wanted < 0 or batch_idx < wanted):
            self._outputs.extend(caption_rows(model, tokenizer, batch, self.validation.generation))
        return loss

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every image of the batch failed to decode (counted by the collator)
            return None
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("lr", lr, prog_bar=False)
        scst = self.self_critical
        loss = scst.training_step(self, *self.built(), batch) if scst else self._shared_step(batch, "train", batch_idx)
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
        return [] if batch is None else caption_rows(*self.built(), batch, self.validation.generation)

    def on_validation_epoch_end(self) -> None:
        self._caption_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._caption_epoch_end("test")

    def _caption_epoch_end(self, stage: str) -> None:
        outputs, self._outputs = self._outputs, []
        v = self.validation
        report_captions(self, stage, outputs, v.caption_metrics_every_n_epochs, v.num_samples, self.data_scores)

    # ---- optimisation ------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        encoder, frozen_epochs = self.built()[0].encoder, self.finetuning.encoder_frozen_epochs
        if frozen_epochs > 0 and self.finetuning.policy == "full":  # frozen: no gradient, AdamW leaves them
            encoder.backbone.requires_grad_(self.current_epoch >= frozen_epochs)
        # Lightning keeps the modules' modes (it never calls train() itself): frozen BatchNorm layers to eval mode,
        # thawed ones back to training; Lightning restores these modes after each validation
        encoder.train(self.training)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        frozen_for_a_while = self.finetuning.encoder_frozen_epochs > 0
        return configure_adamw(self, self.built()[0], self.optimization, include_frozen_backbone=frozen_for_a_while)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    def provenance(self) -> dict[str, Any]:
        """How this run makes its package, for its training.json: objective, start package, optimiser settings."""
        from captioner.train.provenance import provenance, start

        origin = self.origin or (start(self.init_from) if self.init_from else None)
        return provenance(self.optimization, self.finetuning, origin, self.self_critical)
