"""Checkpoints written atomically on local disks (a temporary file in the same folder, fsync, then a rename), and
the RNG states a checkpoint carries so that a resumed run draws what the uninterrupted one would have.

Lightning's default writer goes through an fsspec transaction whose temporary file lives in the system temp
folder; when that is another file system the final "move" is a copy, and a kill during it leaves a broken
checkpoint in place of the previous good one. A rename within one folder cannot be half done.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from captioner.outputs import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: leave it to fsspec
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA) and Python random states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
