"""Benchmarks that print numbers (never tests): `captioner bench decode` compares this project with Hugging Face's
VisionEncoderDecoderModel (ViT + GPT-2 with cross-attention, random weights) at matched sizes, in one run."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig, _Ids, generate
from captioner.model import Captioner

IDS = _Ids(bos_id=1, eos_id=2, pad_id=0)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(args: argparse.Namespace) -> Captioner:
    cfg = CaptionerConfig(
        encoder_name="vit_tiny_patch16_224",
        encoder_img_size=args.image_size,
        encoder_kwargs={"embed_dim": args.enc_width, "depth": args.enc_layers, "num_heads": args.enc_heads},
        vocab_size=args.vocab,
        block_size=64,
        n_layer=args.dec_layers,
        n_head=args.dec_heads,
        n_embd=args.dec_width,
    )
    return Captioner(cfg)


def hugging_face(args: argparse.Namespace):  # noqa: ANN201
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    enc = ViTConfig(
        hidden_size=args.enc_width,
        num_hidden_layers=args.enc_layers,
        num_attention_heads=args.enc_heads,
        intermediate_size=4 * args.enc_width,
        image_size=args.image_size,
        patch_size=16,
    )
    dec = GPT2Config(
        n_layer=args.dec_layers,
        n_embd=args.dec_width,
        n_head=args.dec_heads,
        vocab_size=args.vocab,
        n_positions=64,
        add_cross_attention=True,
        is_decoder=True,
        bos_token_id=IDS.bos_id,
        eos_token_id=IDS.eos_id,
        pad_token_id=IDS.pad_id,
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = IDS.bos_id, IDS.pad_id, IDS.eos_id
    return VisionEncoderDecoderModel(config=cfg)


def _train_step(model: torch.nn.Module, step: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        loss = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def decode_rows(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(row, our seconds, HF seconds) for training step, greedy and beam, plus encoder-only and decode-only rows."""
    torch.manual_seed(0)
    mine, hf = ours(args), hugging_face(args)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    ids = torch.randint(3, args.vocab, (args.batch, args.new_tokens + 1))
    n, beams = args.new_tokens, args.beams
    greedy_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n)
    beam_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
    hf_kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    rows = []
    mine.train(), hf.train()
    t_ours = timed(_train_step(mine, lambda: mine.loss(x, ids, ids)), args.repeats)
    t_hf = timed(_train_step(hf, lambda: hf(pixel_values=x, labels=ids).loss), args.repeats)
    rows.append(("training step (fwd + bwd + AdamW)", t_ours, t_hf))
    mine.eval(), hf.eval()
    with torch.inference_mode():
        memory, enc_out = mine.encode(x), hf.encoder(pixel_values=x)
        cases = {
            "greedy, 20 new tokens": (
                lambda: generate(mine, x, IDS, greedy_cfg),
                lambda: hf.generate(pixel_values=x, num_beams=1, **hf_kw),
            ),
            f"beam search, {beams} beams": (
                lambda: generate(mine, x, IDS, beam_cfg),
                lambda: hf.generate(pixel_values=x, num_beams=beams, **hf_kw),
            ),
            "  encoder forward only": (lambda: mine.encode(x), lambda: hf.encoder(pixel_values=x)),
            "  greedy, decoder only": (
                lambda: generate(mine, None, IDS, greedy_cfg, memory),
                lambda: hf.generate(encoder_outputs=enc_out, num_beams=1, **hf_kw),
            ),
            f"  beam ({beams}), decoder only": (
                lambda: generate(mine, None, IDS, beam_cfg, memory),
                lambda: hf.generate(encoder_outputs=enc_out, num_beams=beams, **hf_kw),
            ),
        }
        for name, (a, b) in cases.items():
            rows.append((name, timed(a, args.repeats), timed(b, args.repeats)))
    print(f"parameters: captioner {mine.num_parameters():,}; Hugging Face {sum(p.numel() for p in hf.parameters()):,}")
    return rows


def print_table(rows: list[tuple[str, float, float]]) -> None:
    print(f"| {'row':<36} | captioner (ms) | Hugging Face (ms) | speed-up |")
    print(f"|{'-' * 38}|---------------:|------------------:|---------:|")
    for name, a, b in rows:
        print(f"| {name:<36} | {a * 1e3:14.1f} | {b * 1e3:17.1f} | {b / a:7.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="captioner bench", description=__doc__)
    parser.add_argument("what", choices=["decode"], help="decode: training step, greedy and beam vs Hugging Face")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--enc-width", type=int, default=192)
    parser.add_argument("--enc-layers", type=int, default=12)
    parser.add_argument("--enc-heads", type=int, default=3)
    parser.add_argument("--dec-width", type=int, default=256)
    parser.add_argument("--dec-layers", type=int, default=4)
    parser.add_argument("--dec-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per row (median), after a warm-up")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print_table(decode_rows(args))
    return 0
