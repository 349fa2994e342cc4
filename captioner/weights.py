"""Safetensors weights checked before anything reads them: the header must fit the file, and every tensor's bytes
must lie inside it, as many as its dtype and shape need (a header that claims a 100 GB tensor is refused at once);
then against the model's config and shapes, and after loading for values that cannot caption; the computed buffers
no state dict holds are made again (`rebuild_computed_buffers`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from captioner.config import CaptionerConfig

DTYPE_BYTES = {  # safetensors' dtype names, by their size in bytes
    **dict.fromkeys(("F64", "I64", "U64"), 8),
    **dict.fromkeys(("F32", "I32", "U32"), 4),
    **dict.fromkeys(("F16", "BF16", "I16", "U16"), 2),
    **dict.fromkeys(("F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"), 1),
}
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
FLOAT_DTYPES = ("F32", "F16", "BF16")
COUNTERS = (".num_batches_tracked",)  # BatchNorm's step counter (a conv stem, a ResNet): the one integer tensor
Header = dict[str, tuple[str, tuple[int, ...]]]


def read_header(path: Path) -> Header:
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
    for name, entry in entries.items() if isinstance(entries, dict) else [("", {})]:
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


def check_header(config: CaptionerConfig, path: Path, config_path: Path) -> Header:
    """The weights file's header (tensor name -> dtype, shape), read without loading a tensor; a config (read from
    `config_path`) whose decoder sizes disagree with it, or a tensor that is not floating point, is named before
    anything is built."""
    header = read_header(path)
    not_float = [
        (k, d) for k, (d, _) in header.items() if d not in FLOAT_DTYPES and not (k.endswith(COUNTERS) and d == "I64")
    ]
    if not_float:
        raise ValueError(f"{path}: tensor {not_float[0][0]!r} is stored as {not_float[0][1]}; weights are floats")
    tied = header.get("decoder.wte.weight") or header.get("decoder.lm_head.weight") or ("", ())  # saved once
    wte, wpe = tied[1], header.get("decoder.wpe.weight", ("", ()))[1]
    found = {
        "n_layer": len({k.split(".")[2] for k in header if k.startswith("decoder.h.")}),
        "vocab_size": wte[0] if wte else None,
        "n_embd": wte[1] if wte else None,
        "block_size": wpe[0] if wpe else None,
    }
    wrong = [
        f"{k}={getattr(config, k)} but the weights hold {v}"
        for k, v in found.items()
        if v not in (None, getattr(config, k))
    ]
    if wrong:
        raise ValueError(f"{config_path} does not match {path.name}: " + "; ".join(wrong))
    return header


def check_shapes(path: Path, header: Header, expected: dict[str, tuple[int, ...]], config_path: Path) -> None:
    """Every tensor of the header has the shape that the model built from `config_path` expects (name -> shape)."""
    for key, (_, shape) in header.items():
        if key in expected and shape != expected[key]:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {shape} but the model built from {config_path.name} "
                f"expects {expected[key]}"
            )


# tensors that earlier packages hold and the model no longer builds, never run: a timm attention-pooling head
# (`captioner.encoder.drop_pooling_head`); they are left unread
DROPPED = ("encoder.backbone.attn_pool.",)


def load_checked(model: nn.Module, path: Path) -> None:
    """Load weights whose header was checked already; refuse missing, unexpected and non-finite tensors."""
    try:
        missing, unexpected = load_model(model, str(path), strict=False)  # knows the tied lm_head / wte weights
    except SafetensorError as err:  # what the header check cannot see, e.g. tensors whose bytes overlap
        raise ValueError(f"{path}: the weights cannot be read ({err}); the file is damaged") from err
    unexpected = [k for k in unexpected if not k.startswith(DROPPED)]
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {sorted(missing)[:5]}, unexpected tensors {sorted(unexpected)[:5]}")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values; this package cannot caption")


def rebuild_computed_buffers(model: nn.Module) -> None:
    """What no state dict holds, timm's computed tables (RoPE frequencies, relative-position indices), made again
    as timm's `reinit_non_persistent_buffers` does; a module that cannot make its own is named."""
    for name, module in model.named_modules():
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()
        elif any(b.numel() for n, b in module.named_buffers(recurse=False) if n in module._non_persistent_buffers_set):
            raise ValueError(
                f"{type(module).__name__} ({name}) holds computed buffers that cannot be rebuilt "
                "after loading; install a timm whose modules have init_non_persistent_buffers"
            )
