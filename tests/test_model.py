import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.model import IGNORE_INDEX, Captioner, caption_loss
from captioner.tokenizer import CaptionTokenizer


def test_forward_shapes(tiny_model: Captioner, images: torch.Tensor, tiny_config: CaptionerConfig):
    ids = torch.randint(0, tiny_config.vocab_size, (3, 7))
    memory = tiny_model.encode(images)
    assert memory.shape == (3, (32 // 8) ** 2, tiny_config.n_embd)  # patch tokens only, class token dropped
    assert tiny_model(images, ids).shape == (3, 7, tiny_config.vocab_size)


def test_gradients_reach_every_trainable_parameter(tiny_model: Captioner, images: torch.Tensor):
    ids = torch.randint(3, 100, (3, 9))
    tiny_model.loss(images, ids, ids.clone()).backward()
    no_grad = [n for n, p in tiny_model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    groups = {n.split(".")[0] for n, _ in tiny_model.named_parameters()}
    assert groups == {"encoder", "decoder"}
    assert any(".cross." in n for n, _ in tiny_model.named_parameters())


def test_labels_are_shifted_exactly_once():
    B, T, V = 2, 6, 11
    ids = torch.randint(0, V, (B, T))
    labels = ids.clone()
    labels[1, 4:] = IGNORE_INDEX  # padding
    perfect = torch.full((B, T, V), -1e4)
    perfect[:, :-1].scatter_(2, ids[:, 1:, None], 1e4)  # logits at t predict token t + 1
    assert caption_loss(perfect, labels).item() < 1e-6
    unshifted = torch.full((B, T, V), -1e4).scatter_(2, ids[:, :, None], 1e4)  # would be right if no shift
    assert caption_loss(unshifted, labels).item() > 1.0 or torch.equal(ids[:, 1:], ids[:, :-1])
    twice = torch.full((B, T, V), -1e4)
    twice[:, :-2].scatter_(2, ids[:, 2:, None], 1e4)  # would be right if shifted twice
    assert caption_loss(twice, labels).item() > 1.0


def test_collated_labels_are_aligned_with_input_ids(tokenizer: CaptionTokenizer):
    from captioner.data.collate import CaptionCollator

    image = torch.zeros(3, 8, 8)
    ex = [{"image": image, "caption": c, "index": i, "references": [c]} for i, c in enumerate(["a", "a small red"])]
    batch = CaptionCollator(tokenizer, 16)(ex)
    ids, labels = batch["input_ids"], batch["labels"]
    real = labels != IGNORE_INDEX
    assert torch.equal(ids[real], labels[real])  # not shifted: the loss shifts
    assert (ids[~real] == tokenizer.pad_id).all() and real[:, 0].all()


def test_loss_falls_when_overfitting_one_batch(tiny_model: Captioner, images: torch.Tensor):
    ids = torch.randint(3, 100, (3, 8))
    opt = torch.optim.AdamW(tiny_model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = tiny_model.loss(images, ids, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_package_round_trip_gives_identical_logits(tiny_model, tokenizer, images, tmp_path):
    ids = torch.randint(0, tokenizer.vocab_size, (3, 5))
    tiny_model.eval()
    path = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer)
    names = ["README.md", "config.json", "model.safetensors", "special_tokens.json", "tokenizer.json"]
    assert sorted(p.name for p in path.iterdir()) == names
    loaded, tok = Captioner.from_pretrained(path)
    assert loaded.config == tiny_model.config
    assert loaded.decoder.lm_head.weight.data_ptr() == loaded.decoder.wte.weight.data_ptr()  # still tied
    assert torch.equal(loaded(images, ids), tiny_model(images, ids))
    assert tok.encode("a red square") == tokenizer.encode("a red square")


def test_package_with_a_conv_stem_keeps_its_batchnorm_statistics(tiny_config, tokenizer, images, tmp_path):
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig.from_dict({**tiny_config.to_dict(), "encoder_conv_stem": [4, 8, 16]}))
    model(images, torch.zeros(3, 2, dtype=torch.long))  # a training-mode forward moves BatchNorm's statistics
    model.eval()
    ids = torch.randint(0, tokenizer.vocab_size, (3, 5))
    loaded, _ = Captioner.from_pretrained(model.save_pretrained(tmp_path / "pkg", tokenizer))  # an I64 step counter
    assert loaded.config.encoder_conv_stem == [4, 8, 16]
    assert torch.equal(loaded(images, ids), model(images, ids))


def test_package_is_not_overwritten_silently(tiny_model, tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path / "pkg", tokenizer)
    with pytest.raises(FileExistsError, match="pkg"):
        tiny_model.save_pretrained(tmp_path / "pkg", tokenizer)
    tiny_model.save_pretrained(tmp_path / "pkg", tokenizer, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no temporary folders left behind


def test_mismatched_package_names_tensor_and_shapes(tiny_model, tokenizer, tmp_path):
    path = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer)
    cfg = tiny_model.config
    CaptionerConfig.from_dict({**cfg.to_dict(), "n_embd": 64}).save(path / "config.json")
    with pytest.raises(ValueError, match=r"n_embd=64 but the weights hold 32"):  # named from the file's header
        Captioner.from_pretrained(path)
    wider = {**cfg.to_dict(), "encoder_kwargs": {**cfg.encoder_kwargs, "embed_dim": 48}}
    CaptionerConfig.from_dict(wider).save(path / "config.json")
    with pytest.raises(ValueError, match=r"tensor 'encoder\..*' has shape \(.*\) but the model built from config"):
        Captioner.from_pretrained(path)


def test_missing_package_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Captioner.from_pretrained(tmp_path)


def test_a_llama_style_package_round_trip_gives_identical_logits(tokenizer, images, tmp_path):
    """Untied head, RoPE tables rebuilt after the meta-device build, cross-attention in one block of two."""
    from tests.test_decoder import LLAMA_STYLE

    torch.manual_seed(0)
    model = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size, n_layer=2, **LLAMA_STYLE))
    model.eval()
    loaded, _ = Captioner.from_pretrained(model.save_pretrained(tmp_path / "pkg", tokenizer))
    assert loaded.config == model.config and loaded.decoder.lm_head.weight is not loaded.decoder.wte.weight
    ids = torch.randint(0, tokenizer.vocab_size, (3, 9))
    assert torch.equal(loaded(images, ids), model(images, ids))
