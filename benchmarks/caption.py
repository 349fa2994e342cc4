"""`python scripts/benchmark.py caption`: images/s of the captioning path (encoder + decoding of images already
decoded and resized) with this project's CPU options against Hugging Face's VisionEncoderDecoderModel, at the
ViT-tiny sizes of `benchmark.py decode` (both size sets: "default", where Hugging Face projects the image memory
at every decoding step, and "equal", where it needs no projection), greedy and beam search, every side timed
alternately in one run.

Rows: Hugging Face fp32; Hugging Face int8, PyTorch's `quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` as a
user would call it (GPT-2's attention and MLP matrices are transformers' `Conv1D`, not `nn.Linear`, so that call
leaves them fp32); Hugging Face int8 with those `Conv1D` layers turned into `nn.Linear` first, so that every matrix
of both models is int8 (the peer's best int8); ours fp32; ours with --quantize int8 (the same `quantize_dynamic`
call); ours with bf16 autocast (timed only where the CPU has AVX512-BF16 or AMX, unless --bf16-anyway); ours fp32
with the per-image Python beam loop this project had before (the oracle of tests/beam_reference.py); with
--compile, ours with a torch.compile'd encoder; with --runtime onnx, ours exported by `captioner export-onnx` and run
by ONNX Runtime on the CPU, fp32 and int8 graphs, under our own decoding (`captioner caption --runtime onnx`).
Random weights, dropout 0, exactly --new-tokens tokens per caption,
so every side does the same work. Speed-ups are medians of the paired repeats, with their spread (min-max).
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from benchmarks.common import add_size_args, describe_peer, describe_sizes, fmt_speedup, sized, timed_all
from benchmarks.decode import IDS, hugging_face, ours
from captioner.generate import GenerationConfig, generate
from captioner.model import Captioner
from captioner.quantize import cpu_has_bf16, quantize_int8

if TYPE_CHECKING:
    from captioner.decoding import CaptionModel
    from captioner.export.runtime import OnnxCaptioner

HF_FP32, HF_INT8, HF_INT8_ALL = "Hugging Face fp32", "Hugging Face int8 (nn.Linear)", "Hugging Face int8 (all)"


def hf_int8(model: nn.Module, conv1d_as_linear: bool) -> nn.Module:
    """A copy of a transformers model with dynamic int8 linears; with `conv1d_as_linear`, GPT-2's `Conv1D` layers
    (y = x W + b, W of shape (in, out)) become equal `nn.Linear` layers first, so that they are quantized too."""
    from transformers.pytorch_utils import Conv1D

    model = copy.deepcopy(model)
    if conv1d_as_linear:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, Conv1D):
                    linear = nn.Linear(child.weight.size(0), child.weight.size(1))
                    with torch.no_grad():
                        linear.weight.copy_(child.weight.t())
                        linear.bias.copy_(child.bias)
                    setattr(parent, name, linear)
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def onnx_models(model: Captioner, folder: Path) -> dict[str, OnnxCaptioner]:
    """`model` exported into `folder` as `captioner export-onnx` writes its graphs, opened by ONNX Runtime fp32 and
    int8 (its default threads: the physical cores)."""
    from captioner.export.onnx import write_graphs
    from captioner.export.runtime import OnnxCaptioner

    write_graphs(model, folder)
    return {
        "captioner ONNX Runtime fp32": OnnxCaptioner(folder, model.config, quantized=False, threads=None),
        "captioner ONNX Runtime int8": OnnxCaptioner(folder, model.config, quantized=True, threads=None),
    }


def sides(args: argparse.Namespace, x: torch.Tensor, beams: int) -> dict[str, Callable[[], object]]:
    """name -> a call that captions the batch `x` (B, 3, H, W) once."""
    torch.manual_seed(0)
    fp32, hf = ours(args).eval(), hugging_face(args).eval()
    int8 = quantize_int8(copy.deepcopy(fp32))
    hf8, hf8_all = hf_int8(hf, conv1d_as_linear=False).eval(), hf_int8(hf, conv1d_as_linear=True).eval()
    n = args.new_tokens
    cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
    hf_kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "num_beams": beams}
    out: dict[str, Callable[[], object]] = {
        HF_FP32: lambda: hf.generate(pixel_values=x, **hf_kw),
        HF_INT8: lambda: hf8.generate(pixel_values=x, **hf_kw),
        HF_INT8_ALL: lambda: hf8_all.generate(pixel_values=x, **hf_kw),
        "captioner fp32": lambda: generate(fp32, x, IDS, cfg),
        "captioner int8": lambda: generate(int8, x, IDS, cfg),
    }
    if cpu_has_bf16() or args.bf16_anyway:

        def bf16() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return generate(fp32, x, IDS, cfg)

        out["captioner bf16"] = bf16
    if beams > 1:
        from tests.beam_reference import reference_beam_search

        out["captioner fp32, per-image beam loop (before)"] = lambda: reference_beam_search(fp32, x, IDS, cfg)
    if args.compile:
        compiled = copy.deepcopy(fp32)
        compiled.encoder = torch.compile(compiled.encoder)
        out["captioner fp32, compiled encoder"] = lambda: generate(compiled, x, IDS, cfg)
    if args.runtime == "onnx":
        for name, model in onnx_models(fp32, Path(tempfile.mkdtemp(prefix="onnx-bench-"))).items():
            out[name] = lambda model=model: generate(model, x, IDS, cfg)  # type: ignore[misc]
    return out


def parts(args: argparse.Namespace, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """With --runtime onnx, where a call's time goes: the encoder alone (memory and image keys/values) and the
    greedy and beam decoding alone (the memory given), PyTorch against ONNX Runtime, fp32 and int8."""
    torch.manual_seed(0)
    fp32 = ours(args).eval()
    models: dict[str, CaptionModel] = {"captioner fp32": fp32, "captioner int8": quantize_int8(copy.deepcopy(fp32))}
    models |= onnx_models(fp32, Path(tempfile.mkdtemp(prefix="onnx-bench-")))
    n = args.new_tokens
    out: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        memory = model.encode(x)
        if isinstance(model, Captioner):
            out[f"{name}: encoder"] = lambda model=model: model.image_kv(model.encode(x))  # type: ignore[misc]
        else:
            out[f"{name}: encoder"] = lambda model=model: model.encode(x)  # type: ignore[misc]
        for beams in (1, args.beams):
            cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
            decoding = "greedy" if beams == 1 else f"beam ({beams})"
            out[f"{name}: {decoding} decoding"] = lambda model=model, cfg=cfg, memory=memory: generate(  # type: ignore[misc]
                model, None, IDS, cfg, memory
            )
    return out


def report_parts(args: argparse.Namespace, times: dict) -> None:
    print(f"\n| {args.size_name + ' sizes, where the time goes':<56} | images/s | vs captioner fp32 (min-max) |")
    print(f"|{'-' * 58}|---------:|----------------------------:|")
    for name, t in times.items():
        base = times[f"captioner fp32: {name.split(': ')[1]}"]
        print(f"| {name:<56} | {args.batch / t.median:8.1f} | {fmt_speedup(t, base):>27} |")


def report(args: argparse.Namespace, label: str, times: dict) -> None:
    hf = times[HF_FP32]
    title = f"{args.size_name} sizes, {label}"
    print(f"\n| {title:<48} | images/s | vs Hugging Face fp32 (min-max) |")
    print(f"|{'-' * 50}|---------:|-------------------------------:|")
    for name, t in times.items():
        print(f"| {name:<48} | {args.batch / t.median:8.1f} | {fmt_speedup(t, hf):>30} |")
    best_hf8 = min((HF_INT8, HF_INT8_ALL), key=lambda n: times[n].median)
    print(
        f"{args.size_name} sizes, {label}: fp32 against fp32 {fmt_speedup(times['captioner fp32'], hf)}; int8 "
        f"against int8 {fmt_speedup(times['captioner int8'], times[best_hf8])} (against {best_hf8}, the faster "
        "of Hugging Face's int8 rows)"
    )
    for name in ("captioner ONNX Runtime fp32", "captioner ONNX Runtime int8"):
        if name in times:
            print(
                f"{title}: {name} against captioner fp32 (PyTorch) {fmt_speedup(times[name], times['captioner fp32'])}"
            )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/benchmark.py caption",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_size_args(parser)
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd encoder")
    parser.add_argument("--bf16-anyway", action="store_true", help="time bf16 even where the CPU emulates it")
    parser.add_argument(
        "--runtime", choices=["torch", "onnx"], default="torch", help="onnx: also time the ONNX export on ONNX Runtime"
    )
    args = parser.parse_args(argv)
    where = platform.processor() or platform.machine()
    bf16 = "AVX512-BF16/AMX" if cpu_has_bf16() else "no AVX512-BF16/AMX: bf16 emulated"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {where} ({bf16}), batch {args.batch}, "
        f"{args.warmup} warm-up calls, then {args.repeats} timed repeats per row (sides alternating)"
    )
    for size in args.sizes.split(","):
        s = sized(args, size)
        print("\n" + describe_peer(hugging_face(s)))
        print(describe_sizes(s).replace(": rows marked *", ""))
        x = torch.randn(args.batch, 3, args.image_size, args.image_size)
        for beams, label in ((1, "greedy"), (args.beams, f"beam ({args.beams})")):
            with torch.inference_mode():
                calls = sides(s, x, beams)
                times = dict(zip(calls, timed_all(list(calls.values()), args.repeats, args.warmup), strict=True))
            report(s, label, times)
        if args.runtime == "onnx":
            with torch.inference_mode():
                calls = parts(s, x)
                times = dict(zip(calls, timed_all(list(calls.values()), args.repeats, args.warmup), strict=True))
            report_parts(s, times)
    return 0
