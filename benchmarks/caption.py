"""`python scripts/benchmark.py caption`: images/s of the captioning path (encoder + decoding of images already
decoded and resized) with this project's CPU options against Hugging Face's VisionEncoderDecoderModel in fp32, at
the ViT-tiny sizes of `benchmark.py decode`, greedy and beam search, every side timed alternately in one run.

Rows: ours fp32; ours with --quantize int8; ours with bf16 autocast (timed only where the CPU has AVX512-BF16 or
AMX, unless --bf16-anyway); ours fp32 with the per-image Python beam loop this project had before (the oracle of
tests/beam_reference.py), to show what the tensor beam search buys; with --compile, ours with a torch.compile'd
encoder. Random weights, exactly --new-tokens tokens per caption, so every side does the same work.
"""

from __future__ import annotations

import argparse
import copy
import platform
from collections.abc import Callable

import torch

from benchmarks.common import add_size_args, timed_all
from benchmarks.decode import IDS, hugging_face, ours
from captioner.generate import GenerationConfig, generate
from captioner.quantize import cpu_has_bf16, quantize_int8


def sides(args: argparse.Namespace, x: torch.Tensor, beams: int) -> dict[str, Callable[[], object]]:
    """name -> a call that captions the batch `x` (B, 3, H, W) once."""
    torch.manual_seed(0)
    fp32, hf = ours(args).eval(), hugging_face(args).eval()
    int8 = quantize_int8(copy.deepcopy(fp32))
    n = args.new_tokens
    cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
    hf_kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "num_beams": beams}
    out: dict[str, Callable[[], object]] = {"Hugging Face fp32": lambda: hf.generate(pixel_values=x, **hf_kw)}
    out["captioner fp32"] = lambda: generate(fp32, x, IDS, cfg)
    out["captioner int8"] = lambda: generate(int8, x, IDS, cfg)
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
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py caption", description=__doc__)
    add_size_args(parser)
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd encoder")
    parser.add_argument("--bf16-anyway", action="store_true", help="time bf16 even where the CPU emulates it")
    args = parser.parse_args(argv)
    where = platform.processor() or platform.machine()
    bf16 = "AVX512-BF16/AMX" if cpu_has_bf16() else "no AVX512-BF16/AMX: bf16 emulated"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {where} ({bf16}), batch {args.batch}")
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    for beams, label in ((1, "greedy"), (args.beams, f"beam ({args.beams})")):
        with torch.inference_mode():
            calls = sides(args, x, beams)
            times = dict(zip(calls, timed_all(list(calls.values()), args.repeats), strict=True))
        hf = times["Hugging Face fp32"]
        print(f"\n| {label:<46} | images/s | vs Hugging Face fp32 |")
        print(f"|{'-' * 48}|---------:|---------------------:|")
        for name, seconds in times.items():
            print(f"| {name:<46} | {args.batch / seconds:8.1f} | {hf / seconds:19.2f}x |")
        best = min((s, n) for n, s in times.items() if n.startswith("captioner") and "before" not in n)
        print(f"{label} {hf / best[0]:.2f}x: {best[1]} against Hugging Face fp32")
    return 0
