"""Safetensors weights checked before anything reads them: the header must fit the file, and every tensor's bytes
must lie inside it, as many as its dtype and shape need (a header that claims a 100 GB tensor is refused at once)."""

from __future__ import annotations

import json
import math
from pathlib import Path

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}  # fmt: skip
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """A safetensors file's header (tensor name -> dtype, shape), checked against the file itself before anything
    else reads it: the header must fit in the file, and every tensor's bytes must lie inside the data that follows
    and be exactly as many as its dtype and shape need (a header may not claim more than the file holds)."""
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    size = path.stat().st_size
    with path.open("rb") as f:
        start = f.read(8)
        length = int.from_bytes(start, "little") if len(start) == 8 else -1
        if not 0 < length <= min(size - 8, MAX_HEADER):
            raise ValueError(f"{path}: not a safetensors file (its header length does not fit its {size:,} bytes)")
        try:
            entries = json.loads(f.read(length))
        except (ValueError, RecursionError):  # not UTF-8 or JSON, nested too deep, a 5,000-digit number
            raise ValueError(f"{path}: not a safetensors file (its header is not readable JSON)") from None
    data = size - 8 - length
    header = {}
    for name, entry in entries.items() if isinstance(entries, dict) else [("", None)]:
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = all(isinstance(n, int) and n >= 0 for n in (*shape, begin, end)) and dtype in DTYPE_BYTES
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{path}: tensor {name!r} has a malformed header entry; the file is damaged")
        if not begin <= end <= data or end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ValueError(
                f"{path}: tensor {name!r} claims bytes {begin:,}..{end:,} for shape {list(shape)} {dtype}, but the "
                f"file holds {data:,} bytes of data; the file is damaged or truncated"
            )
        header[name] = (dtype, shape)
    return header
