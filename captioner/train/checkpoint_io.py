"""Checkpoints written atomically on local disks (a temporary file in the same folder, fsync, then a rename), and
the RNG states a checkpoint carries so that a resumed run draws what the uninterrupted one would have.

Lightning's default writer goes through an fsspec transaction whose temporary file lives in the system temp
folder; when that is another file system the final "move" is a copy, and a kill during it leaves a broken
checkpoint in place of the previous good one. A rename within one folder cannot be half done.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from captioner.outputs import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: leave it to fsspec
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's loader; a file that is not a whole checkpoint is one clear error, not torch's zip message."""
        try:
            return super().load_checkpoint(path, map_location, weights_only)
        except (FileNotFoundError, pickle.UnpicklingError):  # named by Lightning / explained by the CLI
            raise
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} is not a checkpoint that loads (cut short by a crash or a full disk, or not written by "
                f"`captioner fit`: {err}); resume from another checkpoint of its folder"
            ) from err


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from, named with the reason."""


def check_fits(path: Any, saved: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> None:
    """A checkpoint's `state_dict` must hold exactly the module's tensors, shape for shape: else the tensors that
    differ are named (a resume with another config than the run's), before Lightning's load prints 100 lines."""
    shapes = [
        f"{k}: {tuple(v.shape)} saved, {tuple(own[k].shape)} here"
        for k, v in saved.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if shapes or missing or unexpected:
        found = shapes[:3] + [f"missing {m}" for m in missing[:3]] + [f"not in this model {u}" for u in unexpected[:3]]
        raise CheckpointError(
            f"{path} does not fit the model this config builds ({'; '.join(found)}); resume with the config the run "
            "was trained with (config.yaml in its log folder)"
        )


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA) and Python random states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])


class ExactResume(L.LightningModule):
    """A LightningModule with the hooks of the state that travels with our checkpoints: the weights checked against the
    model before Lightning loads them (`check_fits`), and the RNG states, saved with the checkpoint and put back
    when training starts, so that dropout and anything else random resume where they were."""

    _rng_at_resume: dict[str, Any] | None = None  # a checkpoint's RNG states, until training starts

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["captioner_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        where = self.trainer.ckpt_path if self._trainer else "the checkpoint"
        check_fits(where, checkpoint["state_dict"], self.state_dict())
        self._rng_at_resume = checkpoint.get("captioner_rng") or None

    def on_train_start(self) -> None:
        # The RNG states go back in place here, not at load: Lightning loads the checkpoint before the callbacks'
        # `on_fit_start` (the feature cache's loader), the sanity check and the callbacks' `on_train_start`, which
        # the uninterrupted run did before its checkpoint, not between it and the next step; what they draw must
        # not move the dropout masks of the resumed run
        if self._rng_at_resume:
            restore_rng(self._rng_at_resume)
            self._rng_at_resume = None
