"""Every Llama-style start (Llama, Mistral, SmolLM3, Qwen2, Qwen3, Gemma): with the gates at zero the captioner's
logits are the LM's, for any image; what Qwen and Gemma bring, and what is refused."""

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.generate import greedy
from captioner.lm import lm_config
from tests.lm.checkpoints import LLAMA3_ROPE, save_lm, start
from tests.test_generate import IDS, uncached_greedy

# name -> (model_type, checkpoint overrides); FAMILY_KWARGS adds what each family's released models set
VARIANTS = {
    "llama": ("llama", {}),  # grouped-query attention, an untied head
    "llama3-rope": ("llama", {"rope_scaling": LLAMA3_ROPE}),
    "mistral": ("mistral", {}),
    "smollm3": ("smollm3", {}),  # its fourth layer has no RoPE
    "qwen2": ("qwen2", {}),  # q/k/v biases, a tied head
    "qwen2-untied": ("qwen2", {"tie_word_embeddings": False}),
    "qwen3": ("qwen3", {}),  # q/k norm before RoPE, head_dim 32 with hidden 64 and 4 heads
    "gemma": ("gemma", {}),  # 1 + w RMSNorm, GeGLU, scaled embeddings, tied head, head_dim 32
    "gemma2": ("gemma2", {}),  # Gemma's, with post norms, a score scalar, score and logit soft-capping
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def checkpoint(request, tmp_path_factory):
    model_type, overrides = VARIANTS[request.param]
    return save_lm(tmp_path_factory.mktemp(request.param), model_type, 300, **overrides)


@pytest.mark.parametrize("every", [1, 2])
@torch.no_grad()
def test_the_start_is_the_language_model(checkpoint, every, images):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model = start(checkpoint, cross_attention_every=every)
    assert model.decoder.cross_index == ([0, 1, 2, 3] if every == 1 else [1, 3])
    ids = torch.randint(0, 300, (3, 20))
    expected = hf(ids).logits
    assert (model(images, ids) - expected).abs().max() < 1e-4
    assert (model(torch.randn_like(images), ids) - expected).abs().max() < 1e-4  # any image


@pytest.mark.parametrize(
    ("model_type", "fields"),
    [
        ("qwen2", {"attn_bias": True, "bias": False, "norm_qk": False, "tie_word_embeddings": True, "head_size": 16}),
        ("qwen3", {"attn_bias": False, "norm_qk": True, "head_size": 32, "n_query_groups": 2, "mlp_size": 96}),
        (
            "gemma",
            {
                "norm_add_unit_offset": True,
                "scale_embeddings": True,
                "mlp_class_name": "GemmaMLP",
                "head_size": 32,
                "gelu_approximate": "tanh",
                "tie_word_embeddings": True,
                "norm_class_name": "RMSNorm",
            },
        ),
        (
            "gemma2",
            {
                "attention_scores_scalar": 24,
                "attention_logit_softcapping": 2.0,
                "final_logit_softcapping": 3.0,
                "post_attention_norm": True,
                "post_mlp_norm": True,
                "norm_add_unit_offset": True,
            },
        ),
    ],
)
def test_the_decoder_is_sized_from_the_checkpoint(model_type, fields, tmp_path):
    config = start(save_lm(tmp_path, model_type, 300)).config
    resolved = {**config.to_dict(), "mlp_size": config.mlp_size()}
    assert {k: resolved[k] for k in fields} == fields
    assert (config.n_layer, config.n_head, config.n_embd, config.positions) == (4, 4, 64, "rope")
    assert config.cross_gate


def test_a_qwen2_sliding_window_caps_the_block_size(tmp_path):
    window = {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0}
    assert start(save_lm(tmp_path / "on", "qwen2", 300, **window)).config.block_size == 16
    assert start(save_lm(tmp_path / "off", "qwen2", 300, sliding_window=16)).config.block_size == 24  # the preset's


@pytest.mark.parametrize("model_type", ["qwen3", "gemma2"])  # q/k norm and RoPE; soft-capped scores
def test_cached_generation_equals_uncached_token_for_token(model_type, tmp_path, images):
    model = start(save_lm(tmp_path, model_type, 300), cross_attention_every=2)
    for block in model.decoder.blocks():  # gates open: the image is in the path too
        if block.cross_gate is not None:
            block.cross_gate.data.fill_(0.7)
    with torch.no_grad():
        ref = uncached_greedy(model, images, 12)  # the whole prefix, every step
    assert greedy(model, images, IDS.bos_id, IDS.eos_id, IDS.pad_id, max_new_tokens=12) == ref
    assert max(map(len, ref)) == 12  # the cache was used for many positions


def test_a_qwen3_with_attention_biases_is_refused(tmp_path):
    path = save_lm(tmp_path, "qwen3", 300, attention_bias=True)
    with pytest.raises(ValueError, match=r"decoder_init_from=.* \(Qwen3\): attention_bias=True and mlp_bias=False"):
        lm_config(CaptionerConfig(decoder_init_from=str(path)))


@pytest.mark.parametrize("model_type", ["gemma3_text", "qwen3_moe"])
def test_gemma_3_and_mixtures_of_experts_are_refused_naming_the_supported(model_type, tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=rf"is a '{model_type}' model; the supported .* gemma, gemma2, gpt2, llama, "):
        start(tmp_path)
