"""The decoder's blocks as the config describes them: names, where the image enters, and the behaviours that
transformers had to fix in mllama (cross-attention made causal under SDPA, #48172; masked rows leaking, #39379)."""

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.decoder import TextDecoder, is_inserted

# a Llama-style decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention, a head size that is not n_embd // n_head,
# an untied head, cross-attention in the second of two blocks with a cross MLP after it
LLAMA_STYLE = {
    "norm_class_name": "RMSNorm",
    "positions": "rope",
    "mlp_class_name": "LLaMAMLP",
    "intermediate_size": 48,
    "n_head": 4,
    "n_query_groups": 2,
    "head_size": 12,
    "tie_word_embeddings": False,
    "cross_attention_every": 2,
    "cross_mlp": True,
}
STYLES = {"gpt": {}, "llama": LLAMA_STYLE}


def decoder(style: str, **overrides) -> TextDecoder:
    torch.manual_seed(0)
    config = CaptionerConfig.from_name("tiny", n_layer=2, vocab_size=50, **{**STYLES[style], **overrides})
    model = TextDecoder(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # peaked attention: a change anywhere shows
    return model


def test_the_default_decoder_keeps_nanogpts_names():
    names = list(TextDecoder(CaptionerConfig.from_name("tiny")).state_dict())
    block = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
             "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "cross.q_proj.weight", "cross.q_proj.bias",
             "cross.kv_proj.weight", "cross.kv_proj.bias", "cross.c_proj.weight", "cross.c_proj.bias", "ln_3.weight",
             "ln_3.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]  # fmt: skip
    assert names == ["wte.weight", "wpe.weight", *[f"h.0.{n}" for n in block], "ln_f.weight", "ln_f.bias",
                     "lm_head.weight"]  # fmt: skip


@pytest.mark.parametrize(
    ("every", "n_layer", "blocks"),
    [(1, 3, [0, 1, 2]), (2, 4, [1, 3]), (3, 6, [2, 5]), (3, 4, [2]), (4, 4, [3]), ([0, 2], 4, [0, 2])],
)
def test_where_the_image_enters(every, n_layer, blocks):
    config = CaptionerConfig.from_name("tiny", n_layer=n_layer, cross_attention_every=every)
    model = TextDecoder(config)
    assert model.cross_index == blocks == [i for i, b in enumerate(model.h) if b.cross is not None]
    assert len(model.image_kv(torch.randn(2, 5, config.n_embd))) == len(blocks)


@pytest.mark.parametrize("every", [5, 0, [], [1, 1], [2, 1], [4]])
def test_cross_attention_beyond_the_layers_is_refused(every):
    with pytest.raises(ValueError, match="cross_attention_every"):
        TextDecoder(CaptionerConfig.from_name("tiny", n_layer=4, cross_attention_every=every))


def test_inserted_parameters_are_the_image_layers():
    model = TextDecoder(CaptionerConfig.from_name("tiny", n_layer=2, cross_gate=True, cross_mlp=True))
    inserted = {n for n, _ in model.named_parameters() if is_inserted(n)}
    assert inserted and all(n.split(".")[2] in ("ln_2", "cross", "cross_gate", "ln_cross_mlp", "cross_mlp",
                                                  "cross_mlp_gate") for n in inserted)  # fmt: skip
    assert is_inserted("decoder.h.1.cross.q_proj.weight") and not is_inserted("decoder.h.1.mlp.c_fc.weight")
    assert not any(is_inserted(n) for n in ("wte.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight"))


def logits_over_positions(model: TextDecoder, ids: torch.Tensor, memory: torch.Tensor, cached: bool) -> torch.Tensor:
    """(B, T, V) logits: one forward pass, or a cached prefill of the first half then one step per token."""
    kv = model.image_kv(memory)
    if not cached:
        return model(ids, kv)
    model.set_kv_cache(ids.size(0))
    half = ids.size(1) // 2
    parts = [model.logits(model.hidden(ids[:, :half], kv, start=0))]
    parts += [model.logits(model.hidden(ids[:, t : t + 1], kv, start=t)) for t in range(half, ids.size(1))]
    model.clear_kv_cache()
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("style", sorted(STYLES))
@torch.no_grad()
def test_cross_attention_is_never_causal(style, cached):
    """Text position 0 sees every image token, the last included (a causal mask would show it image token 0 only)."""
    model = decoder(style)
    ids, memory = torch.randint(0, 50, (2, 6)), torch.randn(2, 9, 32)
    changed = memory.clone()
    changed[:, -1] += 1.0
    before = logits_over_positions(model, ids, memory, cached)
    after = logits_over_positions(model, ids, changed, cached)
    assert (after[:, 0] - before[:, 0]).abs().max() > 1e-3
    weights: list[torch.Tensor] = []
    model.hidden(ids, model.image_kv(memory), attention=weights)
    assert len(weights) == len(model.cross_index) and (weights[-1][:, :, 0] > 0).all()  # (B, nh, T, N) row 0


@pytest.mark.parametrize("style", sorted(STYLES))
@torch.no_grad()
def test_cached_logits_equal_the_forward_pass(style):
    """RoPE at the right offsets under the cache: prefill, then one position per step."""
    model = decoder(style)
    ids, memory = torch.randint(0, 50, (3, 10)), torch.randn(3, 9, 32)
    full = logits_over_positions(model, ids, memory, cached=False)
    assert (logits_over_positions(model, ids, memory, cached=True) - full).abs().max() < 1e-4


@pytest.mark.parametrize("style", sorted(STYLES))
@torch.no_grad()
def test_later_and_padded_text_does_not_leak_into_earlier_rows(style):
    """Changing the tokens after position t (padding, another caption's end) leaves positions <= t as they were,
    cross-attention included; and the G sequences sharing an image do not see each other."""
    model = decoder(style)
    ids, memory = torch.randint(3, 50, (2, 8)), torch.randn(2, 9, 32)
    padded = ids.clone()
    padded[:, 4:] = 0
    weights, padded_weights = [], []
    a = model.logits(model.hidden(ids, model.image_kv(memory), attention=weights))
    b = model.logits(model.hidden(padded, model.image_kv(memory), attention=padded_weights))
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-5) and not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-3)
    assert torch.allclose(weights[-1][:, :, :4], padded_weights[-1][:, :, :4], atol=1e-6)
    # two sequences per image (beams), grouped image by image, against each sequence alone with its image
    both = torch.stack([ids, padded], dim=1).view(4, 8)  # rows: image 0 x2, image 1 x2
    together = model(both, model.image_kv(memory))  # image keys/values of 2 images shared by 4 rows
    for row in range(4):
        alone = model(both[row : row + 1], model.image_kv(memory[row // 2 : row // 2 + 1]))
        assert torch.allclose(together[row], alone[0], atol=1e-5)


@pytest.mark.parametrize("style", sorted(STYLES))
@torch.no_grad()
def test_image_keys_carry_no_rotary_position(style):
    """Permuting the image tokens permutes nothing in the output: image keys are matched by content only."""
    model = decoder(style)
    ids, memory = torch.randint(0, 50, (2, 7)), torch.randn(2, 9, 32)
    shuffled = memory[:, torch.randperm(9)]
    assert torch.allclose(model(ids, model.image_kv(memory)), model(ids, model.image_kv(shuffled)), atol=1e-4)


def test_grouped_heads_share_key_values():
    model = decoder("llama")
    attn, cross = model.h[1].attn, model.h[1].cross
    assert attn.c_attn.out_features == (4 + 2 * 2) * 12 and attn.c_proj.in_features == 4 * 12
    assert cross.kv_proj.out_features == 2 * 2 * 12
    k, v = model.image_kv(torch.randn(3, 9, 32))[0]
    assert k.shape == v.shape == (3, 2, 9, 12)  # (B, ng, N, hs)
    model.set_kv_cache(5, 7)
    assert model.h[0].attn.kv_cache.k.shape == (5, 2, 7, 12)  # n_query_groups heads are cached, not n_head


@torch.no_grad()
def test_final_logit_softcapping_and_embedding_scaling():
    plain = decoder("gpt")
    capped = decoder("gpt", final_logit_softcapping=2.0, scale_embeddings=True)
    ids, kv = torch.randint(0, 50, (2, 5)), plain.image_kv(torch.randn(2, 9, 32))
    logits = capped(ids, kv)
    assert logits.abs().max() < 2.0 and not torch.allclose(logits, plain(ids, kv))
    hidden = capped.hidden(ids, kv)
    assert torch.allclose(logits, 2.0 * torch.tanh(capped.lm_head(hidden) / 2.0))
