"""Test helper for subprocess runs: a callback that signals its own process at a given step."""

import os

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    def __init__(self, step: int, signal: int = 9) -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)
