"""Starting from pretrained weights, offline: fit with GPT-2 (random, saved locally), timm checkpoints, freezing."""

import lightning as L
import pytest
import timm
import torch
from safetensors.torch import save_file

from captioner.config import CaptionerConfig
from captioner.encoder import ImageEncoder
from captioner.model import Captioner
from captioner.train import Finetuning, connect
from captioner.train.optim import parameter_groups
from tests.helpers import fit, tiny_module, tiny_shapes


@pytest.mark.slow  # a fit of seconds: the fast suite stays under its budget
def test_fit_with_gpt2_decoder_uses_its_tokenizer(gpt2_dir, tmp_path):
    from captioner.cli import main
    from tests.helpers import ROOT

    runs = tmp_path / "runs"
    args = [
        f"--model.config.decoder_init_from={gpt2_dir}",
        "--model.config.encoder_img_size=32",
        "--model.config.encoder_kwargs={embed_dim: 32, depth: 1, num_heads: 2}",
        "--data.init_args.train_size=16",
        "--data.init_args.captions.truncate=true",  # the test GPT-2's tokenizer is the tiny shapes BPE
        "--data.init_args.val_size=8",
        "--data.init_args.batch_size=8",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={runs}",
    ]
    assert main(["fit", "--config", str(ROOT / "configs/shapes.yaml"), *args]) == 0
    package = next(runs.glob("shapes/version_*/model"))
    model, tok = Captioner.from_pretrained(package)
    assert model.config.n_embd == 64 and model.config.cross_gate
    assert tok.encode("a small red circle") == tok.encode("a small red circle")
    assert (package / "tokenizer.json").read_text() == (gpt2_dir / "tokenizer.json").read_text()


def test_timm_checkpoint_file_gives_the_same_features(tmp_path):
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=10, **kwargs).eval()
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    config = CaptionerConfig.from_name("tiny", encoder_checkpoint=str(tmp_path / "vit.safetensors"))
    encoder = ImageEncoder(config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder.backbone.forward_features(x), source.forward_features(x))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ImageEncoder(CaptionerConfig.from_name("tiny", encoder_checkpoint=str(tmp_path / "nope.pth")))


def test_unknown_encoder_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown timm model 'vit_tiny_patch16_2244'.*vit_tiny_patch16_224"):
        ImageEncoder(CaptionerConfig.from_name("tiny", encoder_name="vit_tiny_patch16_2244"))


def test_encoder_frozen_for_the_first_epoch(tmp_path):
    config = CaptionerConfig.from_name("tiny")
    module = tiny_module(config, finetune=Finetuning(encoder_frozen_epochs=1))
    data = tiny_shapes(16)
    connect(module, data)
    start = {k: v.clone() for k, v in module.model.state_dict().items()}

    def changed() -> set[str]:
        return {k for k, v in module.model.state_dict().items() if not torch.equal(v, start[k])}

    kw = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "default_root_dir": tmp_path}
    fit(L.Trainer(max_epochs=1, **kw), module, data)
    after_one = changed()
    assert after_one and not any(k.startswith("encoder.backbone.") for k in after_one)
    fit(L.Trainer(max_epochs=2, **kw), module, data)
    assert any(k.startswith("encoder.backbone.") for k in changed())


def test_layer_decay_scales_backbone_learning_rates():
    model = Captioner(CaptionerConfig.from_name("tiny", encoder_kwargs={"embed_dim": 32, "depth": 3, "num_heads": 2}))
    groups = parameter_groups(model, 0.05, lr=1.0, encoder_lr_mult=0.5, encoder_layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    blocks = model.encoder.backbone.blocks
    rates = [lr_of[id(b.mlp.fc1.weight)] for b in blocks]
    assert rates[-1] == pytest.approx(0.5)  # the top block at the backbone rate (lr * encoder_lr_mult)
    assert rates[0] == pytest.approx(0.5 * 0.5**2) and rates[1] == pytest.approx(0.5 * 0.5)
    assert lr_of[id(model.decoder.wte.weight)] == 1.0
    assert len(lr_of) == len(list(model.parameters()))
