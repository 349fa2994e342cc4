"""Training policies from a pretrained language model: the demo (`configs/shapes.yaml`) with its decoder replaced
by a local random Llama, trained under each policy for the same steps, then its test exact match.

The Llama is random (no download): this measures that each policy trains and what it costs, not what a real
LM brings. Its tokenizer is a byte-level BPE of the shapes training captions (as the demo's) wrapped as a
transformers tokenizer, saved beside the weights with `save_pretrained`, as a Hub checkpoint would hold them.

Policies (`model.finetune`): `full` (everything trains), `freeze_lm` (the LM frozen; cross-attention, gates,
image projection and vision encoder train), `flamingo` (`freeze_lm` and the vision backbone frozen), `lora`
(`freeze_lm` with LoRA r=8 on the LM's attention and MLP). Prints, per policy, the training time and the test
exact match and attribute accuracy on `--test-count` scenes (`captioner demo`'s scoring).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captioner.cli.demo import run_demo
from captioner.shapes import captions, scene_objects
from captioner.tokenizer import CaptionTokenizer

POLICIES: dict[str, list[str]] = {
    "full": [],
    "freeze_lm": ["--model.finetune.freeze_lm=true"],
    "flamingo": ["--model.finetune.freeze_lm=true", "--model.finetune.policy=freeze_encoder"],
    "lora": [
        "--model.finetune.freeze_lm=true",
        "--model.finetune.lora.groups=[lm_attention, lm_mlp]",
        "--model.finetune.lora.r=8",
    ],
}
ROOT = Path(__file__).resolve().parents[1]


def write_llama(folder: Path, layers: int, width: int, seed: int = 0) -> Path:
    """A random Llama (grouped-query attention: 4 heads, 2 key/value heads; an untied head) with a 384-token BPE
    of 2,000 training scenes' captions, saved with `save_pretrained`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    texts = [c for i in range(2000) for c in captions(scene_objects("train", i))]
    tokenizer = CaptionTokenizer.train(texts, vocab_size=384)
    config = AutoConfig.for_model(
        "llama",
        vocab_size=tokenizer.vocab_size,
        hidden_size=width,
        intermediate_size=int(width * 8 / 3) // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer, bos_token="<bos>", eos_token="<eos>")
    wrapped.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/policies_experiment.py", description=__doc__)
    parser.add_argument("--runs", type=Path, default=Path("runs/policies"), help="the Llama and every run go here")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"any of {', '.join(POLICIES)}")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--layers", type=int, default=4, help="the random Llama's layers")
    parser.add_argument("--width", type=int, default=128, help="the random Llama's width")
    parser.add_argument("--cross-attention-every", type=int, default=2)
    parser.add_argument("--test-count", type=int, default=500)
    args, extra = parser.parse_known_args(argv)
    chosen = args.policies.split(",")
    if unknown := [p for p in chosen if p not in POLICIES]:
        parser.error(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    llama = args.runs / "llama"
    if not (llama / "config.json").is_file():
        write_llama(llama, args.layers, args.width)
    report = {}
    for policy in chosen:
        overrides = [
            f"--model.config.decoder_init_from={llama}",
            f"--model.config.cross_attention_every={args.cross_attention_every}",
            f"--trainer.max_steps={args.steps}",
            f"--trainer.val_check_interval={min(args.steps, 600)}",
            f"--trainer.logger.init_args.save_dir={args.runs}",
            f"--trainer.logger.init_args.name={policy}",
            *POLICIES[policy],
            *extra,
        ]
        result = run_demo(str(ROOT / "configs/shapes.yaml"), args.test_count, overrides)
        report[policy] = {k: result[k] for k in ("train_seconds", "steps", "test", "package")}
    print(json.dumps(report, indent=2))
    print(f"\n{'policy':<10} {'steps':>6} {'training':>9} {'test exact match':>17} {'attribute acc.':>15}")
    for policy, r in report.items():
        test = r["test"]
        line = f"{policy:<10} {r['steps']:>6} {r['train_seconds']:>8.0f}s"
        print(f"{line} {test['exact_match']:>17.1%} {test['attribute_accuracy']:>15.1%}")
    return 0
