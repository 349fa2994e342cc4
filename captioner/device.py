"""Where and in what precision inference runs: a device name (`captioner.options.DEVICE`) resolved to a torch
device, and a precision (`captioner.options.PRECISION`) as an autocast context."""

from __future__ import annotations

import contextlib

import torch

from captioner.errors import ArgumentError
from captioner.options import DEVICE, PRECISION, Spec

DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}  # "32": no autocast


def resolve_device(device: str = DEVICE.default) -> torch.device:
    """A torch device from a name: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N; ArgumentError
    for a name torch does not know or a GPU that is not there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ArgumentError(
            "{0}: not a device; use {1}, {2} or {3}",
            ("device", device),
            ("device", "auto"),
            ("device", "cpu"),
            ("device", "cuda"),
        ) from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if resolved.type == "cuda" and (resolved.index or 0) >= gpus:
        there = f"this machine has {gpus} CUDA GPU{'s' if gpus != 1 else ''}" if gpus else "no CUDA GPU is available"
        raise ArgumentError("{0} asked for, but {there}; use {1}", ("device", device), ("device", "cpu"), there=there)
    return resolved


def autocast(device: torch.device, precision: str = PRECISION.default) -> contextlib.AbstractContextManager:
    """Autocast to `precision` on `device` ("32": none); ArgumentError for one the device cannot run."""
    Spec.of("precision", PRECISION).check(precision)
    if precision not in DTYPES:
        return contextlib.nullcontext()
    if device.type == "cpu" and precision == "16":
        raise ArgumentError(
            "{0} needs a GPU; use {1} or {2} on the CPU",
            ("precision", "16"),
            ("precision", "bf16"),
            ("precision", "32"),
        )
    return torch.autocast(device.type, dtype=DTYPES[precision])
