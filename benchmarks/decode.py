"""`python scripts/benchmark.py decode`: this project against Hugging Face's VisionEncoderDecoderModel (ViT + GPT-2
with cross-attention, random weights) at matched sizes, in one run: a training step, greedy and beam decoding."""

from __future__ import annotations

import argparse
import platform

import torch

from benchmarks.common import add_size_args, timed_pair, train_step_fn
from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig, TokenIds, generate
from captioner.model import Captioner

IDS = TokenIds(bos_id=1, eos_id=2, pad_id=0)


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


def decode_rows(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(row, our seconds, HF seconds) for training step, greedy and beam, plus encoder-only and decode-only rows."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    mine, hf = ours(args).to(device), hugging_face(args).to(device)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    ids = torch.randint(3, args.vocab, (args.batch, args.new_tokens + 1), device=device)
    n, beams = args.new_tokens, args.beams
    greedy_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n)
    beam_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
    hf_kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    rows = []
    mine.train(), hf.train()
    train_ours = train_step_fn(mine, lambda: mine.loss(x, ids, ids))
    train_hf = train_step_fn(hf, lambda: hf(pixel_values=x, labels=ids).loss)
    rows.append(("training step (fwd + bwd + AdamW)", *timed_pair(train_ours, train_hf, args.repeats)))
    mine.eval(), hf.eval()
    with torch.inference_mode():
        from transformers.modeling_outputs import BaseModelOutput

        memory, hidden = mine.encode(x), hf.encoder(pixel_values=x).last_hidden_state
        # a fresh wrapper per call: HF's generate expands `encoder_outputs` for beams in place
        enc_out = lambda: BaseModelOutput(last_hidden_state=hidden)  # noqa: E731
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
                lambda: hf.generate(encoder_outputs=enc_out(), num_beams=1, **hf_kw),
            ),
            f"  beam ({beams}), decoder only": (
                lambda: generate(mine, None, IDS, beam_cfg, memory),
                lambda: hf.generate(encoder_outputs=enc_out(), num_beams=beams, **hf_kw),
            ),
        }
        for name, (a, b) in cases.items():
            rows.append((name, *timed_pair(a, b, args.repeats)))
    print(f"parameters: captioner {mine.num_parameters():,}; Hugging Face {sum(p.numel() for p in hf.parameters()):,}")
    return rows


def print_table(rows: list[tuple[str, float, float]]) -> None:
    print(f"| {'row':<36} | captioner (ms) | Hugging Face (ms) | speed-up |")
    print(f"|{'-' * 38}|---------------:|------------------:|---------:|")
    for name, a, b in rows:
        print(f"| {name:<36} | {a * 1e3:14.1f} | {b * 1e3:17.1f} | {b / a:7.2f}x |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py decode", description=__doc__)
    add_size_args(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 on both sides)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}: {where}")
    rows = decode_rows(args)
    print_table(rows)
    times = {name.strip(): (a, b) for name, a, b in rows}
    encoder = times["encoder forward only"][0]
    for name in ("greedy, 20 new tokens", f"beam search, {args.beams} beams"):
        hf_total = times[name][1]
        print(
            f"{name}: the shared ViT encoder is {times['encoder forward only'][1] / hf_total:.0%} of Hugging Face's "
            f"time, so no decoder can make the whole call more than {hf_total / encoder:.2f}x faster"
        )
    return 0
