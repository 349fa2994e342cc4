"""Each data format trains a few steps through `captioner fit`; fine-tuning keeps the tokenizer and the policy."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captioner.cli import main
from captioner.train import Finetuning
from tests.helpers import FORMATS, ROOT, TINY_MODEL, built, own_data_args


def fit(config: str, runs: Path, *extra: str) -> Path:
    args = [
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={runs}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        *extra,
    ]
    assert main(["fit", "--config", str(ROOT / config), *args]) == 0
    packages = list(runs.glob("*/version_*/model"))
    assert len(packages) == 1 and (packages[0] / "model.safetensors").is_file()
    return packages[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_fit_each_format(fmt, shapes_folder, tmp_path):
    data = own_data_args(fmt, shapes_folder, tmp_path)
    fit("configs/pairs.yaml", tmp_path / "runs", *TINY_MODEL, *data, "--model.tokenizer.vocab_size=300")


# a recipe's GPU settings replaced by the CPU's, and no hub download: timm's random weights
OFFLINE = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--model.config.encoder_pretrained=false",
    "--data.init_args.batch_size=2",
]


@pytest.mark.slow  # a ViT-B/16: seconds, kept out of the fast set
def test_the_coco_recipe_trains_offline(shapes_folder, gpt2_dir, tmp_path):
    """configs/coco_vit_gpt2.yaml as written (CLIP ViT-B/16 at 224 px, a GPT-2 decoder, gated cross-attention,
    frozen first epoch), on the CPU with random weights: a local random GPT-2 for the hub's, no timm download."""
    offline = [*OFFLINE, "--trainer.precision=32-true", f"--model.config.decoder_init_from={gpt2_dir}"]
    offline += ["--trainer.max_steps=1", "--trainer.val_check_interval=1"]  # a ViT-B/16 step takes seconds
    data = own_data_args("karpathy", shapes_folder, tmp_path)
    package = fit("configs/coco_vit_gpt2.yaml", tmp_path / "runs", *offline, *data)
    config = json.loads((package / "config.json").read_text())
    assert config["encoder_name"] == "vit_base_patch16_clip_224.openai" and config["cross_gate"]
    assert config["preprocessing"]["input_size"] == [3, 224, 224] and config["n_embd"] == 64  # sized from the GPT-2


@pytest.mark.slow  # a ViT-B/16 in bf16 on the CPU: about 15 s
def test_the_smollm2_recipe_trains_offline(shapes_folder, llama_dir, tmp_path, capsys, caplog):
    """configs/coco_siglip_smollm2.yaml as written (SigLIP 2 ViT-B/16, a Llama LM frozen in bf16 with LoRA on its
    attention, cross-attention in every third block with a cross MLP), bf16-mixed on the CPU: a local random
    Llama (4 blocks: cross-attention in block 2) for SmolLM2-135M."""
    offline = [*OFFLINE, f"--model.config.decoder_init_from={llama_dir}"]  # precision stays the recipe's bf16-mixed
    offline += ["--trainer.max_steps=1", "--trainer.val_check_interval=1"]  # a ViT-B/16 step in bf16 takes seconds
    data = own_data_args("karpathy", shapes_folder, tmp_path)
    package = fit("configs/coco_siglip_smollm2.yaml", tmp_path / "runs", *offline, *data)
    config = json.loads((package / "config.json").read_text())
    assert config["encoder_name"] == "vit_base_patch16_siglip_224.v2_webli" and config["cross_mlp"]
    assert config["positions"] == "rope" and config["n_query_groups"] == 2  # sized from the Llama
    weights = load_file(package / "model.safetensors")
    assert "decoder.h.2.cross.q_proj.weight" in weights and "decoder.h.1.cross.q_proj.weight" not in weights
    assert not [k for k in weights if "lora" in k] and all(t.dtype == torch.float32 for t in weights.values())
    said = capsys.readouterr()
    assert "LoRA" in said.out + said.err + caplog.text  # the trainable table was printed


@pytest.mark.parametrize("policy", ["cross_attention", "freeze_encoder"])
def test_finetune_keeps_tokenizer_and_freezes(policy, trained_package, shapes_folder, tmp_path):
    rows = [
        {"file_name": f"images/train_{i:06d}.png", "text": "a crimson disc beside a teal rhombus ✨"} for i in range(12)
    ]
    (shapes_folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = fit(
        "configs/finetune.yaml",
        tmp_path / "runs",
        f"--model.init_from={trained_package}",
        f"--data.init_args.train={shapes_folder}",
        f"--model.finetune.policy={policy}",
        "--model.optimizer.lr=0.01",
        "--data.init_args.split.val_fraction=0.25",
    )
    assert (out / "tokenizer.json").read_text() == (trained_package / "tokenizer.json").read_text()
    before, after = load_file(trained_package / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not before[k].equal(after[k])}
    assert any(k.startswith("decoder.h.0.cross.") for k in changed)
    assert not any(k.startswith("encoder.backbone.") and "norm" not in k for k in changed)
    if policy == "cross_attention":
        assert not any(k.startswith("decoder.") and ".cross." not in k and "ln" not in k for k in changed)
    else:
        assert any(k.startswith("decoder.h.0.mlp.") for k in changed)


def test_finetune_needs_a_package(tmp_path, shapes_folder, capsys):
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/finetune.yaml"),
        f"--model.init_from={tmp_path}",
        f"--data.init_args.train={shapes_folder}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error:") and "not a model package" in err and "\n" not in err


def test_parameter_groups_encoder_lr_and_no_decay(tiny_model):
    from captioner.train.build import apply_finetune_policy
    from captioner.train.optim import parameter_groups

    groups = parameter_groups(tiny_model, weight_decay=0.1, lr=1e-3, encoder_lr_mult=0.1)
    backbone = {id(p) for p in tiny_model.encoder.backbone.parameters()}
    for g in groups:
        in_backbone = {id(p) in backbone for p in g["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all not
        assert g["lr"] == pytest.approx(1e-4 if in_backbone.pop() else 1e-3)
        if g["weight_decay"] > 0:
            assert all(p.ndim >= 2 for p in g["params"])
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(tiny_model.decoder.wte.weight) in no_decay and id(tiny_model.decoder.ln_f.weight) in no_decay
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_model.parameters()))
    apply_finetune_policy(tiny_model, "freeze_encoder")
    trainable = sum(len(g["params"]) for g in parameter_groups(tiny_model, 0.1, 1e-3))
    n_trainable = len([p for p in tiny_model.parameters() if p.requires_grad])
    assert trainable == n_trainable < len(list(tiny_model.parameters()))


def test_finetuning_reinitialises_never_trained_token_embeddings(trained_package):
    from captioner.model import Captioner
    from captioner.train.module import CaptionerModule

    used = json.loads((trained_package / "training.json").read_text())["used_token_ids"]
    base, _ = Captioner.from_pretrained(trained_package)
    module = built(CaptionerModule(init_from=str(trained_package)))
    before, after = base.decoder.wte.weight, module.model.decoder.wte.weight
    unused = [i for i in range(before.size(0)) if i not in set(used)]
    assert used and unused
    assert torch.equal(before[used], after[used])
    assert not torch.equal(before[unused], after[unused])
    known = before[used]
    assert (after[unused].std(0) - known.std(0)).abs().mean() < 0.5 * known.std(0).mean()  # on the known rows' scale
    kept = built(CaptionerModule(init_from=str(trained_package), finetune=Finetuning(reinit_unused_tokens=False)))
    assert torch.equal(kept.model.decoder.wte.weight, before)
