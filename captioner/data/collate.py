"""Batching: captions tokenized and padded, labels aligned with the input ids, failed images counted."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from captioner.data.tables import DataError
from captioner.tokenizer import IGNORE_INDEX, CaptionTokenizer


class DecodeFailures:
    """Counts examples that could not be read (an image that failed to decode, a shard member that is not a
    caption); warns naming each, stops when too many fail.

    Each DataLoader worker holds its own copy, so the rate is checked per worker (each sees a random share). The
    check applies once `min_seen` examples were seen: 100, or a worker's whole share of a smaller split (the loader
    sets it), so that a small split whose images all fail (a 5 % validation split landing on one broken file)
    stops with this message instead of training or validating on nothing.
    """

    def __init__(self, max_rate: float = 0.02, min_seen: int = 100) -> None:
        self.max_rate, self.min_seen = max_rate, min_seen
        self.seen, self.failed = 0, 0
        self.examples: list[str] = []
        self.warned: set[str] = set()  # each file is warned about once (again in later epochs: only counted)

    def update(self, total: int, failures: list[dict[str, Any]]) -> None:
        self.seen += total
        self.failed += len(failures)
        for f in failures:
            if f["error"] not in self.warned:
                self.warned.add(f["error"])
                warnings.warn(f"skipped an example that could not be read: {f['error']}", stacklevel=2)
            if len(self.examples) < 5:
                self.examples.append(f["error"])
        if self.seen >= self.min_seen and self.failed > self.max_rate * self.seen:
            raise DataError(
                f"{self.failed} of {self.seen} examples could not be read ({self.failed / self.seen:.1%} > "
                f"max_failure_rate {self.max_rate:.1%}), e.g. {'; '.join(self.examples[:3])}. Fix or remove these "
                "files or shards, or raise max_failure_rate (data.init_args.images.max_failure_rate)."
            )


class CaptionCollator:
    """List of examples -> batch {images (B,3,H,W), input_ids (B,T), labels (B,T), index, references}.

    Examples from the feature cache carry `features` (B, N, C) instead of `images`. Examples whose image failed
    to decode (`{"error": ...}`) are left out and counted in `failures`. Captions are padded to the longest in
    the batch, or to `max_length` when `pad_to_max_length` (fixed shapes, so torch.compile does not recompile).
    """

    def __init__(
        self,
        tokenizer: CaptionTokenizer,
        max_length: int,
        failures: DecodeFailures | None = None,
        pad_to_max_length: bool = False,
    ) -> None:
        self.tokenizer, self.max_length, self.pad_to_max_length = tokenizer, max_length, pad_to_max_length
        self.failures = failures or DecodeFailures()

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        bad = [e for e in examples if "error" in e]
        self.failures.update(len(examples), bad)
        examples = [e for e in examples if "error" not in e]
        if not examples:
            return None  # the whole batch failed: the module skips it
        ids = [self.tokenizer.encode(e["caption"], self.max_length) for e in examples]
        T = self.max_length if self.pad_to_max_length else max(len(x) for x in ids)
        input_ids = torch.full((len(ids), T), self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full((len(ids), T), IGNORE_INDEX, dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(x)] = torch.tensor(x)  # aligned with input_ids; the shift happens in caption_loss
        key = "features" if "features" in examples[0] else "image"
        return {
            "features" if key == "features" else "images": torch.stack([e[key] for e in examples]),  # (B,3,H,W)|(B,N,C)
            "input_ids": input_ids,
            "labels": labels,
            "index": [e["index"] for e in examples],
            "references": [e["references"] for e in examples],
        }
