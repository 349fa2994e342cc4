"""`python scripts/benchmark.py decode --decoder llama`: our decoding of a Llama-style language model, started from
its checkpoint with the cross-attention gates at zero, against transformers' `LlamaForCausalLM.generate` on the
same LM (same sizes and weights, a random checkpoint saved with `save_pretrained`), in one run.

Both sides start every sequence from the LM's BOS and write exactly `--new-tokens` tokens greedily (EOS held off
on both), and the tokens out are checked equal: with the gates at zero our decoder computes the LM, so the only
difference is the work around it. Ours also runs its inserted cross-attention layers (every `--cross-every`
blocks, over `--image-tokens` image tokens given as memory; gated at zero they change nothing, but they are
computed), so the comparison charges us for the image. transformers runs its defaults: SDPA attention and its
dynamic KV cache, fp32. Rows: batch 1 and `--batch`; speed-up = transformers' seconds per call / ours, the median
of the paired repeats (min-max); tokens/s counts the new tokens of every sequence of a call. `--device cuda` runs
both sides on the GPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.common import Timing, fmt_speedup, timed_all
from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig, TokenIds, generate
from captioner.model import Captioner

# SmolLM2-135M's shapes (HuggingFaceTB/SmolLM2-135M's config.json): 30 blocks 576 wide, 9 query heads over 3
# key/value heads, SwiGLU 1536 wide, a tied head over 49,152 tokens; "small" is a quicker stand-in
LLAMA_SIZES = {
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 8192,
        "tie_word_embeddings": False,
    },
    "tiny": {  # for the test that both sides write the same tokens
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
    },
}
IDS = TokenIds(bos_id=1, eos_id=2, pad_id=0)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llama-size", default="smollm2-135m", choices=sorted(LLAMA_SIZES))
    parser.add_argument("--cross-every", type=int, default=3, help="a cross-attention layer in every k-th block")
    parser.add_argument("--image-tokens", type=int, default=196, help="image memory length (ViT-B/16 at 224 px)")


def save_llama(folder: Path, size: str) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **LLAMA_SIZES[size],
        max_position_embeddings=2048,
        bos_token_id=IDS.bos_id,
        eos_token_id=IDS.eos_id,
        pad_token_id=IDS.pad_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def encoder_overrides() -> dict[str, object]:
    """A one-block encoder: the rows time the decoder from a given image memory, never the encoder."""
    return {
        "encoder_img_size": 32,
        "encoder_patch_size": 16,
        "encoder_kwargs": {"embed_dim": 64, "depth": 1, "num_heads": 1},
    }


def sides(args: argparse.Namespace, folder: Path, batch: int):
    """Our call and transformers' for `batch` sequences, and a check that they write the same tokens."""
    from transformers import LlamaForCausalLM

    device = torch.device(args.device)
    hf = LlamaForCausalLM.from_pretrained(folder).eval().to(device)
    config = CaptionerConfig(
        decoder_init_from=str(folder), cross_attention_every=args.cross_every, block_size=64, **encoder_overrides()
    )
    mine = Captioner(config).eval().to(device)
    n = args.new_tokens
    memory = torch.randn(batch, args.image_tokens, mine.config.n_embd, device=device)  # (B, N, C)
    bos = torch.full((batch, 1), IDS.bos_id, device=device)
    options = GenerationConfig(max_new_tokens=n, min_new_tokens=n)

    def ours() -> list[list[int]]:
        return [hyps[0].tokens for hyps in generate(mine, None, IDS, options, memory)]

    def theirs() -> list[list[int]]:
        out = hf.generate(
            bos,
            attention_mask=torch.ones_like(bos),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            num_beams=1,
            pad_token_id=IDS.pad_id,
        )
        return out[:, 1:].tolist()

    with torch.inference_mode():
        same = ours() == theirs()
    return mine, hf, ours, theirs, same


def tokens_per_s(t: Timing, batch: int, n: int) -> str:
    return f"{batch * n / t.median:,.0f}"


def main(args: argparse.Namespace) -> int:
    import transformers

    n = args.new_tokens
    print(
        f"device {args.device}; peer: transformers {transformers.__version__} LlamaForCausalLM.generate (SDPA, "
        "dynamic cache), fp32 on both sides; "
        f"LM sizes {args.llama_size}: {LLAMA_SIZES[args.llama_size]}"
    )
    print(
        f"ours: the same checkpoint through decoder_init_from, cross-attention every {args.cross_every} blocks "
        f"(gates at zero) over {args.image_tokens} image tokens; {n} new tokens, greedy; {args.warmup} warm-up "
        f"calls, then {args.repeats} timed repeats per row (the sides alternating)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_llama(Path(tmp), args.llama_size)
        for batch in (1, args.batch):
            mine, hf, ours, theirs, same = sides(args, folder, batch)
            print(
                f"parameters at batch {batch}: ours {mine.num_parameters():,}, transformers' LM "
                f"{sum(p.numel() for p in hf.parameters()):,}"
            )
            with torch.inference_mode():
                a, b = timed_all([ours, theirs], args.repeats, args.warmup)
            rows.append((batch, a, b, same))
    print("| batch | ours (tokens/s) | transformers (tokens/s) | speed-up (min-max) | same tokens |")
    print("|---:|---:|---:|---:|:---:|")
    for batch, a, b, same in rows:
        print(
            f"| {batch} | {tokens_per_s(a, batch, n)} | {tokens_per_s(b, batch, n)} | {fmt_speedup(a, b)} | "
            f"{'yes' if same else 'NO'} |"
        )
    return 0 if all(same for *_, same in rows) else 1
