"""`python scripts/benchmark.py decode`: this project against Hugging Face's VisionEncoderDecoderModel (ViT + GPT-2
with cross-attention, random weights) at matched sizes, in one run: a training step, greedy and beam decoding.
With `--decoder llama`: our decoding of a Llama-style LM against LlamaForCausalLM.generate (benchmarks/decode_llama.py).

Two size sets (`--sizes`): "default" (decoder 256 wide, wider than the 192-wide encoder: Hugging Face projects the
whole image memory in every forward call, so at every decoding step, where we project it once) and "equal" (decoder
192 wide with 3 heads, as the encoder: no projection on either side). Both sides run fp32 with dropout 0; the
training step runs Hugging Face with use_cache=False. Each row prints the median of the paired repeats' speed-ups
and their spread (min-max), and Hugging Face's FLOPs per call over ours (torch's FlopCounterMode, one call each).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import decode_llama
from benchmarks.common import (
    add_size_args,
    describe_peer,
    describe_sizes,
    fmt_speedup,
    projects_per_step,
    sized,
    timed_all,
    train_step_fn,
)
from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig, TokenIds, generate
from captioner.model import Captioner

IDS = TokenIds(bos_id=1, eos_id=2, pad_id=0)
Row = tuple[str, Callable[[], object], Callable[[], object], bool]  # name, ours, Hugging Face, HF projects per step


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
        dropout=0.0,
    )
    return Captioner(cfg)


def hugging_face(args: argparse.Namespace):
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    enc = ViTConfig(
        hidden_size=args.enc_width,
        num_hidden_layers=args.enc_layers,
        num_attention_heads=args.enc_heads,
        intermediate_size=4 * args.enc_width,
        image_size=args.image_size,
        patch_size=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    dec = GPT2Config(
        n_layer=args.dec_layers,
        n_embd=args.dec_width,
        n_head=args.dec_heads,
        vocab_size=args.vocab,
        n_positions=64,
        add_cross_attention=True,
        is_decoder=True,
        resid_pdrop=0.0,  # GPT-2's default 0.1 would make its training step do more work than ours
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=IDS.bos_id,
        eos_token_id=IDS.eos_id,
        pad_token_id=IDS.pad_id,
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = IDS.bos_id, IDS.pad_id, IDS.eos_id
    return VisionEncoderDecoderModel(config=cfg)


def flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def cases(args: argparse.Namespace, mine: Captioner, hf, x: torch.Tensor) -> list[Row]:
    """The inference rows: end to end, then the encoder alone and the decoder alone (memory given)."""
    from transformers.modeling_outputs import BaseModelOutput

    n, beams, proj = args.new_tokens, args.beams, projects_per_step(args)
    greedy_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n)
    beam_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, num_beams=beams)
    hf_kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    memory, hidden = mine.encode(x), hf.encoder(pixel_values=x).last_hidden_state
    # a fresh wrapper per call: HF's generate expands `encoder_outputs` for beams in place
    enc_out = lambda: BaseModelOutput(last_hidden_state=hidden)  # noqa: E731
    return [
        (
            f"greedy, {n} new tokens",
            lambda: generate(mine, x, IDS, greedy_cfg),
            lambda: hf.generate(pixel_values=x, num_beams=1, **hf_kw),
            proj,
        ),
        (
            f"beam search, {beams} beams",
            lambda: generate(mine, x, IDS, beam_cfg),
            lambda: hf.generate(pixel_values=x, num_beams=beams, **hf_kw),
            proj,
        ),
        ("  encoder forward only", lambda: mine.encode(x), lambda: hf.encoder(pixel_values=x), False),
        (
            "  greedy, decoder only",
            lambda: generate(mine, None, IDS, greedy_cfg, memory),
            lambda: hf.generate(encoder_outputs=enc_out(), num_beams=1, **hf_kw),
            proj,
        ),
        (
            f"  beam ({beams}), decoder only",
            lambda: generate(mine, None, IDS, beam_cfg, memory),
            lambda: hf.generate(encoder_outputs=enc_out(), num_beams=beams, **hf_kw),
            proj,
        ),
    ]


def decode_rows(args: argparse.Namespace, bounds: list[str]) -> list[tuple[str, str, str, str, str, str]]:
    """Table rows (sizes, name, our ms, HF ms, speed-up with spread, HF/our FLOPs) of one size set; what bounds the
    end-to-end rows is appended to `bounds`."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    mine, hf = ours(args).to(device), hugging_face(args).to(device)
    print(describe_sizes(args))
    print(f"parameters: captioner {mine.num_parameters():,}; Hugging Face {sum(p.numel() for p in hf.parameters()):,}")
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    ids = torch.randint(3, args.vocab, (args.batch, args.new_tokens + 1), device=device)
    mine.train(), hf.train()
    train_ours = train_step_fn(mine, lambda: mine.loss(x, ids, ids))
    train_hf = train_step_fn(hf, lambda: hf(pixel_values=x, labels=ids, use_cache=False).loss)
    # the training step projects once per forward on both sides (no decoding steps): never marked
    rows = [("training step (fwd + bwd + AdamW)", train_ours, train_hf, False)]
    timings = [timed_all([a, b], args.repeats, args.warmup) for _, a, b, _ in rows]
    counts = [(flops(rows[0][1]), flops(rows[0][2]))]
    mine.eval(), hf.eval()
    with torch.inference_mode():
        inference = cases(args, mine, hf, x)
        timings += [timed_all([a, b], args.repeats, args.warmup) for _, a, b, _ in inference]
        counts += [(flops(a), flops(b)) for _, a, b, _ in inference]
    table = []
    for (name, _, _, proj), (a, b), (fa, fb) in zip([*rows, *inference], timings, counts, strict=True):
        mark = " *" if proj else ""
        table.append(
            (
                args.size_name,
                name + mark,
                f"{a.median * 1e3:.1f}",
                f"{b.median * 1e3:.1f}",
                fmt_speedup(a, b),
                f"{fb / max(fa, 1):.2f}",
            )
        )
    hf_encoder = timings[3][1].median
    for (name, *_), (_, b) in zip(inference[:2], timings[1:3], strict=True):
        bounds.append(
            f"{args.size_name} sizes, {name}: the shared ViT encoder is {hf_encoder / b.median:.0%} of "
            f"Hugging Face's time, so no decoder can make the whole call more than "
            f"{b.median / timings[3][0].median:.2f}x faster"
        )
    return table


def print_table(rows: list[tuple[str, ...]]) -> None:
    head = ("sizes", "row", "captioner (ms)", "Hugging Face (ms)", "speed-up (min-max)", "HF/our FLOPs")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    print(line(head) + " |")
    print("|" + "|".join("-" * (w + 1) + ("-" if i < 2 else ":") for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(line(r) + " |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/benchmark.py decode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_size_args(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 on both sides)")
    parser.add_argument(
        "--decoder",
        default="gpt2",
        choices=("gpt2", "llama"),
        help="gpt2: the captioner against VisionEncoderDecoder (above); llama: our decoding of a Llama-style LM "
        "with the gates at zero against LlamaForCausalLM.generate (benchmarks/decode_llama.py)",
    )
    decode_llama.add_args(parser)
    args = parser.parse_args(argv)
    if args.decoder == "llama":
        return decode_llama.main(args)
    sets = [sized(args, name) for name in args.sizes.split(",")]
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}: {where}")
    print(
        f"batch {args.batch}, {args.new_tokens} new tokens, {args.warmup} warm-up calls, then {args.repeats} "
        "timed repeats per row (the sides alternating); speed-up = Hugging Face time / ours, median of the paired "
        "repeats (min-max)"
    )
    print(describe_peer(hugging_face(sets[0])) + "; the training step runs Hugging Face with use_cache=False")
    bounds: list[str] = []
    rows = [r for s in sets for r in decode_rows(s, bounds)]
    print_table(rows)
    print("* Hugging Face projects the image memory to the decoder width in every forward call (each decoding step)")
    print("\n".join(bounds))
    return 0
