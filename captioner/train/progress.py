"""The training progress bar in steps: `captioner fit` runs for `trainer.max_steps`, so the bar reads "step N of
max_steps" across epochs and resumes (Lightning's per-epoch bar read "Epoch 0/-2" for a step-limited run and
"4000/741" after a mid-epoch resume, its batch index over the resumed loader's remaining length)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar; with `max_steps` set the training bar counts optimizer steps out of `max_steps`
    (`trainer.global_step`, so it starts where a resumed run starts) and is labelled "Epoch N" without a bogus
    total. With only `max_epochs` it is Lightning's bar unchanged."""

    def _by_steps(self) -> bool:
        return self.trainer.max_steps > 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._by_steps():
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None:
            return None
        description = self._get_train_description(trainer.current_epoch)
        if self.train_progress_bar_id is None:
            self.train_progress_bar_id = self._add_task(trainer.max_steps, description)
        self.progress.update(
            self.train_progress_bar_id,
            total=trainer.max_steps,
            completed=trainer.global_step,
            description=description,
            visible=True,
        )
        self.refresh()
        return None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._by_steps():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self.on_train_epoch_start(trainer, pl_module)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
        return None

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._by_steps():
            return super()._get_train_description(current_epoch)
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
