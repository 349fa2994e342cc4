"""Training policies from a tiny random local Llama: freeze_lm, LoRA (peft) and its merged package, the table of
trainable parameters, activation checkpointing, a frozen language model held in bfloat16."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.train import Finetuning, Lora, Speed
from captioner.train.lora import merged as merge_lora
from captioner.train.parameters import is_adapted, is_adapter, is_lm, trainable_table
from tests.helpers import built, fit, tiny_module, tiny_shapes

TRAINER = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "max_steps": 3,
    "limit_val_batches": 0,
}
LORA = Lora(groups=["lm_attention", "lm_mlp"], r=2, alpha=4)


def llama_module(llama_dir, finetune: Finetuning, **kwargs):
    """A CaptionerModule starting from the tiny Llama (cross-attention in every second block, the tiny encoder)."""
    config = CaptionerConfig.from_name("tiny", decoder_init_from=str(llama_dir), cross_attention_every=2)
    return tiny_module(config, finetune=finetune, **kwargs)


def trained(module, tmp_path, **trainer) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every tensor of the module's model before and after a few training steps."""
    data = tiny_shapes(24)
    from captioner.train import connect

    connect(module, data)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit(L.Trainer(default_root_dir=tmp_path, **{**TRAINER, **trainer}), module, data)
    return before, dict(module.model.state_dict())


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.slow
def test_freeze_lm_leaves_every_language_model_tensor_bit_identical(llama_dir, tmp_path, caplog):
    """The Flamingo recipe (frozen encoder and LM), with the LM's blocks recomputed in the backward pass."""
    finetune = Finetuning(policy="freeze_encoder", freeze_lm=True)
    module = llama_module(llama_dir, finetune, speed=Speed(activation_checkpointing=True))
    with caplog.at_level("INFO"):
        before, after = trained(module, tmp_path)
    moved = changed(before, after)
    lm = [k for k in before if is_lm(k)]
    assert lm and not moved & set(lm)
    assert not any(k.startswith("encoder.backbone.") for k in moved)
    assert {k for k in moved if ".cross." in k} and "encoder.proj.weight" in moved  # inserted layers and projection
    table = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("trainable parameters:"))
    row = next(line.split() for line in table.splitlines() if line.startswith("language model"))
    assert row[2] == "0" and int(row[3].replace(",", "")) == sum(before[k].numel() for k in lm)  # an untied head


@pytest.mark.slow
def test_lora_trains_only_adapters_cross_attention_and_gates_and_the_package_holds_merged_weights(
    llama_dir, tmp_path, monkeypatch
):
    from captioner.train.callbacks import ExportModelPackage

    export = ExportModelPackage(str(tmp_path / "package"))
    module = llama_module(llama_dir, Finetuning(policy="cross_attention", freeze_lm=True, lora=LORA))
    before, after = trained(module, tmp_path, callbacks=[export])
    moved = changed(before, after)
    adapters = {k for k in before if is_adapter(k)}
    assert adapters and {k for k in adapters if "lora_B" in k} <= moved  # B starts at 0: every update moved
    encoder_norms = {k for k in moved if k.startswith("encoder.") and ("norm" in k or k.startswith("encoder.ln."))}
    assert moved - adapters - encoder_norms <= {k for k in before if ".cross" in k or "_gate" in k or ".ln_2." in k}
    assert not {k for k in moved if is_adapted(k) or is_lm(k)}
    assert any("_gate" in k for k in moved) and any(".cross." in k for k in moved)

    merged = merge_lora(module.built()[0]).eval()
    assert not any(is_adapter(n) or is_adapted(n) for n, _ in merged.named_parameters())
    assert any(is_adapter(n) for n, _ in module.model.named_parameters())  # the training model keeps its LoRA
    monkeypatch.setitem(sys.modules, "peft", None)  # the package loads without peft
    package, _ = Captioner.from_pretrained(tmp_path / "package")
    images, ids = torch.randn(2, 3, 32, 32), torch.randint(0, 200, (2, 10))
    with torch.no_grad():
        assert torch.equal(package(images, ids), merged(images, ids))
        lora_logits = module.model.eval()(images, ids)
    assert torch.allclose(lora_logits, merged(images, ids), atol=1e-5)  # merging keeps what LoRA computes


@pytest.mark.parametrize(
    ("finetune", "match"),
    [
        (Finetuning(freeze_lm=True), "freeze_lm freezes a pretrained language model"),
        (Finetuning(lora=Lora(groups=["lm_mlp"])), "lm_mlp adapts a pretrained language model"),
        (Finetuning(lora=Lora(groups=["attention"])), "unknown group 'attention'"),
        (Finetuning(frozen_lm_dtype="bfloat16"), "no language model tensor is frozen"),
    ],
)
def test_policies_a_model_cannot_take_are_refused(finetune, match):
    with pytest.raises(ValueError, match=match):
        built(tiny_module(finetune=finetune))


def test_lora_on_a_group_the_model_lacks_is_one_line_through_the_cli(tmp_path, capsys):
    from captioner.cli import main
    from tests.helpers import ROOT, TINY_MODEL, TINY_SHAPES_DATA

    config = str(ROOT / "configs/shapes.yaml")
    args = [
        *TINY_MODEL,
        *TINY_SHAPES_DATA,
        "--model.finetune.lora.groups=[lm_mlp]",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(["fit", "--config", config, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("captioner: error: finetune.lora.groups: lm_mlp adapts a pretrained language model")


def test_the_table_counts_each_group_once(llama_dir):
    model = built(llama_module(llama_dir, Finetuning(freeze_lm=True, lora=LORA))).model
    lines = trainable_table(model).splitlines()
    rows = {line[:18].strip(): [int(n.replace(",", "")) for n in line[18:].split()] for line in lines[2:]}
    assert set(rows) == {"vision encoder", "image projection", "language model", "cross-attention", "LoRA", "all"}
    assert rows["language model"][0] == 0 and rows["LoRA"][0] == rows["LoRA"][1] > 0
    assert rows["all"] == [model.num_parameters(trainable_only=True), model.num_parameters()]


def test_activation_checkpointing_gives_the_plain_gradients(llama_dir, images):
    config = CaptionerConfig.from_name("tiny", decoder_init_from=str(llama_dir), dropout=0.1)
    torch.manual_seed(0)
    model = Captioner(config).train()
    ids = torch.randint(0, 200, (3, 12))

    def gradients(recompute: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model.decoder.activation_checkpointing = recompute
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the RNG state in its recomputation)
        model.loss(images, ids, ids).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, recomputed = gradients(False), gradients(True)
    assert plain.keys() == recomputed.keys() and len(plain) == len(list(model.parameters()))
    assert all(torch.allclose(plain[n], recomputed[n], atol=1e-6, rtol=0) for n in plain)


def test_a_frozen_language_model_held_in_bfloat16(llama_dir, images):
    finetune = Finetuning(policy="freeze_encoder", freeze_lm=True)
    fp32 = built(llama_module(llama_dir, finetune)).model.train()
    bf16 = built(
        llama_module(llama_dir, Finetuning(policy="freeze_encoder", freeze_lm=True, frozen_lm_dtype="bfloat16"))
    )
    held = bf16.model.train()
    held.load_state_dict(fp32.state_dict())  # the same weights, cast where held in bfloat16
    lm_bytes = {
        name: sum(p.numel() * p.element_size() for n, p in m.named_parameters() if is_lm(n))
        for name, m in (("fp32", fp32), ("bf16", held))
    }
    assert lm_bytes["bf16"] * 2 == lm_bytes["fp32"]
    assert all(p.dtype == torch.float32 for p in held.parameters() if p.requires_grad)
    ids = torch.randint(0, 200, (3, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [float(m.loss(images, ids, ids)) for m in (fp32, held)]
    assert abs(losses[0] - losses[1]) <= 0.02 * losses[0]


def test_frozen_lm_in_bfloat16_needs_bf16_autocast(llama_dir, tmp_path):
    module = llama_module(llama_dir, Finetuning(freeze_lm=True, frozen_lm_dtype="bfloat16"), speed=Speed())
    with pytest.raises(ValueError, match="set trainer.precision to bf16-mixed"):
        trained(module, tmp_path)


@pytest.mark.slow
def test_the_demo_config_fits_a_bfloat16_lm_with_lora_and_checkpointing(llama_dir, tmp_path):
    """Through `captioner fit` with the demo's callbacks (figures, throughput, export) in bf16-mixed on the CPU:
    the package is float32 and plain."""
    from tests.helpers import TINY_MODEL, TINY_SHAPES_DATA, fit_shapes_package

    flags = [
        f"--model.config.decoder_init_from={llama_dir}",
        "--data.init_args.captions.truncate=true",
        "--model.finetune.freeze_lm=true",
        "--model.finetune.lora.groups=[lm_attention, vision]",
        "--model.finetune.frozen_lm_dtype=bfloat16",
        "--model.speed.activation_checkpointing=true",
        "--trainer.precision=bf16-mixed",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1",
        "--model.validation.generate_batches=0",
    ]
    package = fit_shapes_package(tmp_path / "runs", [*TINY_MODEL, *TINY_SHAPES_DATA, *flags])
    model, _ = Captioner.from_pretrained(package)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert list(package.parent.glob("figures/step_2/*.png"))  # drawn under the run's autocast
