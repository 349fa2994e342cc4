"""CPU inference options: dynamic int8 linear layers, and what this CPU offers for bf16.

`quantize_int8(model)` swaps every `nn.Linear` of the encoder and the decoder for PyTorch's dynamically quantized
int8 linear (weights stored in int8 per tensor, activations quantized per batch as they come; fbgemm/x86 kernels),
the layers that are nearly all of a captioning call's time. We use `torch.ao.quantization.quantize_dynamic`: it is
deprecated in favour of torchao, but torchao's int8 CPU path is built for `torch.compile`, while this one runs
fast in eager mode and is still shipped with torch 2.14. Measured cost on the shapes test set and speed:
docs/BENCHMARKS.md ("Captioning on the CPU: int8, bf16, many processes").
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from captioner.model import Captioner


def quantize_int8(model: Captioner) -> Captioner:
    """The model (in place) with dynamic int8 linear layers; CPU only, for inference."""
    device = model.device
    if device.type != "cpu":
        raise ValueError(
            f"int8 dynamic quantization runs on the CPU (fbgemm kernels), and the model is on {device}: "
            "move it to the CPU first, or on a GPU autocast to bf16 instead"
        )
    model.eval()
    with warnings.catch_warnings():  # the torch.ao deprecation notes: see the module docstring
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX); elsewhere torch emulates them,
    correctly but slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def bf16_note(device: torch.device) -> str | None:
    """A one-line note when bf16 on this device will be slower than fp32, else None."""
    if device.type == "cpu" and not cpu_has_bf16():
        return "this CPU has no AVX512-BF16 or AMX, so bf16 is emulated (same captions within rounding, slower than 32)"
    return None
