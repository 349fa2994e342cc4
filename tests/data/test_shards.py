"""webdataset shards: write from any format, read back; workers and ranks read disjoint shards."""

import pytest
import torch
from torch.utils.data import DataLoader

from captioner.data.shard_writer import write_shards
from captioner.data.shards import shard_dataset
from captioner.data.sources import read_imagefolder


def keys_of(ds, num_workers: int = 0) -> list[str]:
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    return [ex["index"] for ex in loader]


@pytest.fixture
def shards(shapes_folder, tmp_path):
    written, skipped = write_shards(read_imagefolder(shapes_folder), str(tmp_path / "shards/%05d.tar"), max_count=3)
    assert skipped == []
    return written, str(tmp_path / "shards/{00000..00003}.tar")


def test_write_and_read_back(shards, shapes_folder):
    written, pattern = shards
    assert len(written) == 4
    ds = shard_dataset(pattern, lambda im: torch.zeros(3, 2, 2), train=False)
    examples = list(ds)
    assert len(examples) == 12
    first = examples[0]
    assert first["references"] == read_imagefolder(shapes_folder)[0].captions
    assert first["caption"] == first["references"][0]


def test_existing_shards_are_not_overwritten(shards, shapes_folder, tmp_path):
    with pytest.raises(FileExistsError, match="00000.tar"):
        write_shards(read_imagefolder(shapes_folder), str(tmp_path / "shards/%05d.tar"))


def test_workers_read_disjoint_shards(shards):
    _, pattern = shards
    ds = shard_dataset(pattern, lambda im: torch.zeros(3, 2, 2), train=False)
    keys = keys_of(ds, num_workers=2)
    assert len(keys) == 12 and len(set(keys)) == 12


def test_ranks_read_disjoint_shards(shards, monkeypatch):
    _, pattern = shards
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append(set(keys_of(shard_dataset(pattern, lambda im: torch.zeros(3, 2, 2), train=False))))
    assert seen[0] and seen[1] and not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12


def test_epoch_length(shards):
    _, pattern = shards
    ds = shard_dataset(pattern, lambda im: torch.zeros(3, 2, 2), train=True, epoch_samples=5, shuffle_buffer=4)
    assert len(keys_of(ds)) == 5
