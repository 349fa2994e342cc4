"""Cached encoder features: a frozen encoder's patch tokens of every training image, memory-mapped on disk.

When the timm backbone does not train and images are not augmented, every epoch would compute the same patch
tokens again. The cache computes them once (in the first pass, split over the ranks), stores them as bf16 rows
of one memory-mapped file, and the training data set then hands out rows instead of decoding images.

Layout: `ROOT/<encoder name>-<key>/` with `meta.json` (the key's parts, shape, dtype), `features.bin` (rows
(num_rows, N, C)) and `status.bin` (one byte per row: 0 missing, 1 stored, 2 the image failed to decode).
The key is a hash of everything the tokens depend on: the encoder's name and architecture, a digest of its
weights, the image transform, the data set (image paths with their sizes and modification times), the dtype
and the precision they were computed in. Change any part and the key changes, so a stale cache is never read
(invalidation is automatic); a run killed while filling keeps the rows it stored and the next run fills the
rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from captioner.outputs import write_text

MISSING, STORED, FAILED = 0, 1, 2
# storage dtype -> (torch dtype, numpy dtype of the file); numpy has no bfloat16, so its bits are kept as uint16
_STORAGE: dict[str, tuple[torch.dtype, type[np.generic]]] = {
    "bfloat16": (torch.bfloat16, np.uint16),
    "float16": (torch.float16, np.float16),
    "float32": (torch.float32, np.float32),
}


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@runtime_checkable
class Cacheable(Protocol):
    """A training data set the feature cache can fill and serve: its images (a data set of {"index", "image" |
    "error"} rows), what identifies them (part of the cache key), and the cache its rows come from instead of the
    images once `features` is set."""

    features: FeatureCache | None

    def __len__(self) -> int: ...

    def images(self) -> Dataset: ...

    def cache_fingerprint(self) -> object: ...


class FeatureCache:
    """One memory-mapped array of patch tokens, rows indexed like the data set.

    Picklable: DataLoader workers reopen the files read-only on first use.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), meta
        self.shape = (int(meta["rows"]), *map(int, meta["row_shape"]))
        self.torch_dtype, self.np_dtype = _STORAGE[meta["dtype"]]
        self._maps: tuple[np.memmap, np.memmap] | None = None  # (features, status), opened on first use
        self._writable = False

    # ---- create / open ---------------------------------------------------------------------------------------
    @classmethod
    def location(cls, root: str | Path, parts: dict[str, Any]) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(parts.get("encoder", "encoder")))[:60]
        return Path(root) / f"{slug}-{cache_key(parts)}"

    @classmethod
    def create(
        cls, root: str | Path, parts: dict[str, Any], rows: int, row_shape: Sequence[int], dtype: str = "bfloat16"
    ) -> FeatureCache:
        """Open the cache for `parts`, creating its (sparse, zero) files when it does not exist yet."""
        if dtype not in _STORAGE:
            raise ValueError(f"feature cache dtype {dtype!r}: choose one of {sorted(_STORAGE)}")
        path = cls.location(root, parts)
        meta = {"key": cache_key(parts), "parts": parts, "rows": rows, "row_shape": list(row_shape), "dtype": dtype}
        if (path / "meta.json").is_file():
            found = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            if {k: found.get(k) for k in meta} != json.loads(json.dumps(meta, default=str)):
                raise RuntimeError(f"{path}/meta.json does not match this run's key; delete {path} to rebuild it")
            return cls(path, found)
        path.mkdir(parents=True, exist_ok=True)
        itemsize = np.dtype(_STORAGE[dtype][1]).itemsize
        for name, size in (("features.bin", rows * int(np.prod(row_shape)) * itemsize), ("status.bin", rows)):
            with open(path / name, "wb") as f:
                f.truncate(size)  # sparse: disk is used as rows are written
        write_text(path / "meta.json", json.dumps(meta, indent=1, default=str))  # last: the files are complete
        return cls(path, meta)

    @classmethod
    def open(cls, path: str | Path) -> FeatureCache:
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise FileNotFoundError(f"{path} is not a feature cache (meta.json is missing)")
        return cls(path, json.loads((path / "meta.json").read_text(encoding="utf-8")))

    def _arrays(self, writable: bool = False) -> tuple[np.memmap, np.memmap]:
        if self._maps is None or (writable and not self._writable):
            mode: Literal["r+", "r"] = "r+" if writable else "r"
            features = np.memmap(self.path / "features.bin", self.np_dtype, mode, shape=self.shape)
            self._maps = features, np.memmap(self.path / "status.bin", np.uint8, mode, shape=(self.shape[0],))
            self._writable = writable
        return self._maps

    def __reduce__(self) -> tuple[type[FeatureCache], tuple[Path, dict[str, Any]]]:
        """Pickled as its path and meta: the unpickled copy opens its own maps."""
        return type(self), (self.path, self.meta)

    # ---- rows ------------------------------------------------------------------------------------------------
    def status(self) -> np.ndarray:
        return np.array(self._arrays()[1])

    def missing(self) -> list[int]:
        return np.flatnonzero(self.status() == MISSING).tolist()

    def write(self, rows: Sequence[int], features: torch.Tensor) -> None:
        """Store (len(rows), N, C) features; rows are marked stored only after their data is flushed."""
        feats, status = self._arrays(writable=True)
        data = features.detach().to("cpu", self.torch_dtype).contiguous()
        if tuple(data.shape[1:]) != self.shape[1:]:
            raise ValueError(f"feature rows of shape {tuple(data.shape[1:])}, the cache holds {self.shape[1:]}")
        array = data.view(torch.int16).numpy().view(np.uint16) if self.torch_dtype == torch.bfloat16 else data.numpy()
        idx = np.asarray(rows, dtype=np.int64)
        feats[idx] = array
        feats.flush()
        status[idx] = STORED
        status.flush()

    def mark_failed(self, rows: Sequence[int]) -> None:
        status = self._arrays(writable=True)[1]
        status[np.asarray(rows, dtype=np.int64)] = FAILED
        status.flush()

    def read(self, row: int) -> torch.Tensor | None:
        """(N, C) features of a row, None when the row's image failed to decode."""
        feats, status = self._arrays()
        state = int(status[row])
        if state == FAILED:
            return None
        if state != STORED:
            raise KeyError(f"row {row} of the feature cache {self.path} was never filled")
        array = np.array(feats[row])  # a copy out of the map
        tensor = torch.from_numpy(array)
        return tensor.view(torch.bfloat16) if self.torch_dtype == torch.bfloat16 else tensor
