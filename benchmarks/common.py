"""What the benchmarks share: timing callables side by side (paired repeats, medians and spreads), the sizes of the
benchmarks against Hugging Face, a description of the peer, a plain AdamW training step."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

# the sizes of the benchmarks against Hugging Face: "default" has a decoder wider than the encoder, so Hugging Face's
# VisionEncoderDecoderModel projects the image memory (enc_to_dec_proj) inside every forward call, at every decoding
# step; "equal" gives both the encoder's width and heads, so it needs no projection
SIZES = {"default": {"dec_width": 256, "dec_heads": 4}, "equal": {"dec_width": 192, "dec_heads": 3}}


def add_size_args(parser: argparse.ArgumentParser) -> None:
    """The model and decoding sizes of the benchmarks against Hugging Face (ViT-tiny at 224 px, a 4-layer decoder)."""
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--enc-width", type=int, default=192)
    parser.add_argument("--enc-layers", type=int, default=12)
    parser.add_argument("--enc-heads", type=int, default=3)
    parser.add_argument("--dec-layers", type=int, default=4)
    parser.add_argument(
        "--sizes",
        default="default,equal",
        help="decoder sizes to run, comma-separated: default (256 wide, 4 heads: Hugging Face "
        "projects the image memory at every step) and equal (192 wide, 3 heads: as the encoder, "
        "no projection)",
    )
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each side first")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per row, the sides alternating")


def sized(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """`args` with the decoder width and heads of the size set `name` (SIZES)."""
    if name not in SIZES:
        raise SystemExit(f"--sizes: unknown size set {name!r}; choose from {', '.join(SIZES)}")
    return argparse.Namespace(**{**vars(args), **SIZES[name], "size_name": name})


def projects_per_step(args: argparse.Namespace) -> bool:
    """Whether Hugging Face's VisionEncoderDecoderModel applies enc_to_dec_proj in every forward call here."""
    return args.enc_width != args.dec_width


def describe_sizes(args: argparse.Namespace) -> str:
    per_step = (
        f"Hugging Face projects the image memory {args.enc_width} -> {args.dec_width} (enc_to_dec_proj) in every "
        "forward call, at every decoding step: rows marked *"
        if projects_per_step(args)
        else "equal widths: Hugging Face needs no projection"
    )
    return (
        f'sizes "{args.size_name}": encoder {args.enc_width} wide x {args.enc_layers} layers ({args.enc_heads} '
        f"heads), decoder {args.dec_width} wide x {args.dec_layers} layers ({args.dec_heads} heads); {per_step}"
    )


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Seconds of each timed call of one side, in repeat order (repeat i of every side ran back to back)."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def timed_all(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[Timing]:
    """`repeats` timed calls of each of `fns` after `warmup` untimed calls of each; the calls alternate so that
    drifts in the machine's speed hit every side alike, and repeat i of two sides can be compared as a pair."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - start)
    return [Timing(t) for t in times]


def speedup(ours: Timing, peer: Timing) -> tuple[float, float, float]:
    """peer seconds / our seconds: the median over the paired repeats, and their min and max (the spread)."""
    ratios = [p / o for o, p in zip(ours.times, peer.times, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def fmt_speedup(ours: Timing, peer: Timing) -> str:
    median, low, high = speedup(ours, peer)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


def describe_peer(hf: torch.nn.Module) -> str:
    """The peer's library version and attention implementation, as its config resolved them."""
    import transformers

    impl = lambda cfg: getattr(cfg, "_attn_implementation", None) or "eager"  # noqa: E731
    return (
        f"peer: transformers {transformers.__version__} VisionEncoderDecoderModel (ViTModel + GPT2LMHeadModel with "
        f"cross-attention), attention implementation: encoder {impl(hf.encoder.config)}, decoder "
        f"{impl(hf.decoder.config)}; dropout 0 on both sides"
    )


def train_step_fn(model: torch.nn.Module, step: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        loss = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run
