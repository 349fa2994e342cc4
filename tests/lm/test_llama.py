"""Llama-family starts (Llama, Mistral, SmolLM3): sizes, rope scaling, gates, refusals (logits: test_families)."""

import shutil

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.lm import FAMILIES, lm_config
from captioner.model import Captioner
from captioner.rope import inverse_frequencies
from tests.lm.checkpoints import LLAMA3_ROPE, save_lm, start


def test_the_decoder_is_sized_from_the_checkpoint(llama_dir):
    config = start(llama_dir).config
    assert (config.n_layer, config.n_head, config.n_query_groups, config.head_size, config.n_embd) == (4, 4, 2, 16, 64)
    assert (config.intermediate_size, config.norm_class_name, config.norm_eps, config.rope_base) == (
        96,
        "RMSNorm",
        1e-5,
        5000.0,
    )
    assert (config.positions, config.mlp_class_name, config.tie_word_embeddings, config.cross_gate) == (
        "rope",
        "LLaMAMLP",
        False,
        True,
    )
    assert config.bias is False and config.rope_adjustments is None
    # the fields the LM decides replace the preset's, whatever they were
    again = lm_config(CaptionerConfig(decoder_init_from=str(llama_dir), norm_qk=True, block_size=500))
    assert again.norm_qk is False and again.block_size == 64  # at most the LM's max_position_embeddings


def test_llama3_rope_scaling_is_read_and_changes_the_frequencies(tmp_path):
    config = start(save_lm(tmp_path, "llama", 300, rope_scaling=LLAMA3_ROPE)).config
    assert config.rope_adjustments == {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_seq_len": 64.0,
    }
    plain, scaled = inverse_frequencies(16, 5000.0), inverse_frequencies(16, 5000.0, config.rope_adjustments)
    assert plain[0] == scaled[0] and (scaled[-2:] < plain[-2:]).all()  # long wavelengths slowed


@torch.no_grad()
def test_an_open_gate_changes_the_logits(llama_dir, images):
    model = start(llama_dir, cross_attention_every=2, cross_mlp=True)
    ids = torch.randint(0, 300, (3, 12))
    before = model(images, ids)
    block = model.decoder.h[3]
    block.cross_gate.fill_(0.5)
    opened = model(images, ids)
    assert (opened - before).abs().max() > 1e-3
    block.cross_mlp_gate.fill_(0.5)
    assert (model(images, ids) - opened).abs().max() > 1e-3  # the cross MLP is in the path too
    block.cross_gate.zero_()
    block.cross_mlp_gate.zero_()
    assert torch.equal(model(images, ids), before)


def test_blocks_without_cross_attention_have_no_cross_parameters(llama_dir):
    names = {n for n, _ in start(llama_dir, cross_attention_every=2, cross_mlp=True).decoder.named_parameters()}
    for i, has in enumerate([False, True, False, True]):
        inserted = {n for n in names if n.startswith(f"h.{i}.") and ("cross" in n or ".ln_2." in n)}
        assert bool(inserted) == has
    assert "h.1.cross_mlp_gate" in names and "h.0.ln_2.weight" not in names


def test_an_unsupported_family_is_refused_naming_the_supported(tmp_path):
    from transformers import OPTConfig

    OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=r"is a 'opt' model; the supported language models are gemma, gemma2, gpt2, llama, "
    ):
        Captioner(CaptionerConfig.from_name("tiny", decoder_init_from=str(tmp_path)))
    assert {"gpt2", "llama", "mistral"} <= set(FAMILIES)


def test_pickled_weights_are_refused_unread(llama_dir, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    shutil.copytree(llama_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"\.bin weights need arbitrary unpickling .* save_pretrained"):
        Captioner(CaptionerConfig.from_name("tiny", decoder_init_from=str(folder)))


def test_sharded_safetensors_load(llama_dir, tmp_path, images):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(llama_dir)
    hf.save_pretrained(tmp_path, max_shard_size="50KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        assert (start(tmp_path)(images[:2], ids) - hf.eval()(ids).logits).abs().max() < 1e-4
