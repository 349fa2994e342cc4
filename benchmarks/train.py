"""`python scripts/benchmark.py train`: images/s, tokens/s, peak memory and MFU of training steps on this device.

Rows: full training (encoder trained), frozen encoder, cached encoder features; each with and without
torch.compile (`--compile`). MFU counts FLOPs with `captioner.flops` against `--peak-tflops` (989 for H100/H200
bf16 dense).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import sync
from captioner.config import CaptionerConfig
from captioner.flops import step_flops
from captioner.model import Captioner


def build(args: argparse.Namespace) -> Captioner:
    cfg = CaptionerConfig(
        encoder_name=args.encoder,
        encoder_img_size=args.image_size,
        vocab_size=args.vocab,
        block_size=max(64, args.tokens),
        n_layer=args.layers,
        n_head=args.width // 64,
        n_embd=args.width,
    )
    return Captioner(cfg)


def run_mode(args: argparse.Namespace, mode: str, compiled: bool) -> dict:
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build(args).to(device)
    frozen = mode in ("frozen", "cached")
    model.encoder.backbone.requires_grad_(not frozen)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    ids = torch.randint(3, args.vocab, (args.batch, args.tokens), device=device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
        cached = model.encoder.patch_tokens(x).detach().to(torch.bfloat16)  # what the feature cache hands back
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    # the training loss as CaptionerModule computes it (compiled whole with `model.compile: true`); captions are
    # padded to a fixed --tokens, so shapes never change
    loss_fn = torch.compile(model.loss, dynamic=False) if compiled else model.loss

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            if mode == "cached":
                loss = loss_fn(None, ids, ids, cached)
            else:
                loss = loss_fn(x, ids, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - start) / args.steps
    n_patches = cached.size(1)
    flops = step_flops(model, n_patches, model.encoder.num_prefix_tokens, args.tokens).training(
        args.batch, frozen_encoder=mode == "frozen", cached_features=mode == "cached"
    )
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {
        "mode": mode + (" + compile" if compiled else ""),
        "step_ms": dt * 1e3,
        "images_s": args.batch / dt,
        "tokens_s": args.batch * args.tokens / dt,
        "peak_gib": peak,
        "tflops": flops / dt / 1e12,
        "mfu": flops / dt / (args.peak_tflops * 1e12),
        "warmup_s": warm_s,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py train", description=__doc__)
    parser.add_argument("--encoder", default="vit_base_patch16_224")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--tokens", type=int, default=32, help="caption length (padded)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--modes", default="full,frozen,cached")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="989: H100/H200 bf16 dense")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"device {name}; torch {torch.__version__}; {args.encoder} + {args.layers}x{args.width} decoder; "
        f"batch {args.batch}, {args.tokens} tokens, bf16 {args.bf16}"
    )
    print("| mode | step (ms) | images/s | tokens/s | peak GiB | TFLOP/s | MFU | warm-up (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for compiled in (False, True) if args.compile else (False,):  # eager rows first: compiling takes minutes
        for mode in args.modes.split(","):
            r = run_mode(args, mode, compiled)
            print(
                f"| {r['mode']} | {r['step_ms']:.1f} | {r['images_s']:.0f} | {r['tokens_s']:.0f} | "
                f"{r['peak_gib']:.1f} | {r['tflops']:.0f} | {r['mfu']:.1%} | {r['warmup_s']:.0f} |"
            )
    return 0
