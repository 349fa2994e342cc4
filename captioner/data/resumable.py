"""A DataLoader that Lightning can resume mid-epoch exactly (it implements `state_dict` / `load_state_dict`).

The order of an epoch is a permutation drawn from (seed, epoch) alone, and the sampler hands the dataset
`(epoch, index)` so that per-example randomness (which reference caption, a flip) is a function of those two as
well. The loader counts the batches it has handed out; Lightning stores that count in every checkpoint, and a
restored loader skips that many batches of the same permutation, at the sampler (no image is decoded for them).

The loader never draws from torch's global generator: DataLoader draws each iterator's base seed (the workers'
seeds) from its `generator`, the global one when it has none, and a resumed run builds one more iterator than the
uninterrupted run did (the epoch it resumes into), which would shift every later dropout mask. Its own generator
is seeded from (seed, epoch) at each epoch, so the workers' seeds are a function of those two as well.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


def example_rng(key: Any) -> random.Random:
    """Per-example randomness from the sampler's (epoch, index); a plain index (another sampler, e.g. DDP's
    DistributedSampler) draws from the global generator."""
    if not isinstance(key, tuple):
        return random._inst  # the module-level generator
    return random.Random(zlib.crc32(f"{key[0]}/{key[1]}".encode()))


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's draws (its order, its workers' seeds) from the run's seed."""
    return seed * 100_003 + epoch


def example_index(key: Any) -> int:
    return key[1] if isinstance(key, tuple) else key


class EpochSampler(Sampler):
    """Yields (epoch, index): shuffled by a generator seeded with (seed, epoch), or in order."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start, resumed ones included
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        start, self.skip = self.skip, 0
        for i in order[start:].tolist():
            yield (self.epoch, i)


class ResumableDataLoader(DataLoader):
    """DataLoader over an `EpochSampler` whose position within the epoch survives a checkpoint."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, seed: int = 0, **kwargs: Any) -> None:
        self.epoch_sampler = EpochSampler(len(dataset), shuffle, seed)  # `sampler`, typed as this loader's own
        self.own_generator = torch.Generator()  # `generator`, typed: the iterators' base seeds, never the global RNG
        super().__init__(
            dataset, batch_size=batch_size, sampler=self.epoch_sampler, generator=self.own_generator, **kwargs
        )
        self._batch_size, self._handed_out, self._resume_at = batch_size, 0, 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator around DataLoader's own iterator
        resume, self._resume_at = self._resume_at, 0
        if resume >= len(self):  # the checkpoint was taken at the very end of an epoch
            resume = 0
        self.epoch_sampler.skip = resume * self._batch_size
        self._handed_out = resume
        self.own_generator.manual_seed(epoch_seed(self.epoch_sampler.seed, self.epoch_sampler.epoch))
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"batches": self._handed_out, "epoch": self.epoch_sampler.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = int(state["batches"])
