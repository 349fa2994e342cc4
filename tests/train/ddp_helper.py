"""Test helper for multi-process runs: each rank writes the samples it trained on and a digest of its weights."""

import hashlib
import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class RecordRank(Callback):
    def __init__(self, out: str) -> None:
        self.out, self.seen = Path(out), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.extend(int(i) for i in batch["index"])

    def on_train_end(self, trainer, pl_module) -> None:
        h = hashlib.sha256()
        for name, tensor in sorted(pl_module.model.state_dict().items()):
            h.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "seen": self.seen,
            "weights": h.hexdigest(),
            "steps": trainer.global_step,
            "cached": pl_module.speed.feature_cache is not None,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
