"""Grouped-query attention: folding a group's query heads into the query length equals repeating its keys/values."""

import pytest
import torch

from captioner.attention import attend


def repeated(q, k, v, mask=None, causal=False):
    rep = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # transformers' repeat_kv
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_attention_equals_repeated_key_values(groups):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, groups, 7, 8), torch.randn(2, groups, 7, 8)
    mask = torch.ones(5, 7, dtype=torch.bool).tril(diagonal=2)  # a prefill's mask after 2 cached positions
    assert torch.allclose(attend(q, k, v), repeated(q, k, v), atol=1e-6)
    assert torch.allclose(attend(q, k, v, mask), repeated(q, k, v, mask), atol=1e-6)
    square = k[:, :, :5], v[:, :, :5]
    assert torch.allclose(attend(q, *square, causal=True), repeated(q, *square, causal=True), atol=1e-6)


@pytest.mark.parametrize("groups", [1, 2])
def test_softcapped_scores_are_plain_attention_under_a_huge_cap_and_bend_under_a_small_one(groups):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8) * 3, torch.randn(2, groups, 7, 8) * 3, torch.randn(2, groups, 7, 8)
    mask = torch.ones(5, 7, dtype=torch.bool).tril(diagonal=2)
    square = k[:, :, :5], v[:, :, :5]
    for kwargs in ({"mask": mask}, {"causal": True}):
        keys = square if kwargs.get("causal") else (k, v)
        plain = attend(q, *keys, scale=0.2, **kwargs)
        assert torch.allclose(attend(q, *keys, scale=0.2, softcap=1e6, **kwargs), plain, atol=1e-5)
        capped = attend(q, *keys, scale=0.2, softcap=1.0, **kwargs)
        assert not torch.allclose(capped, plain, atol=1e-2)
    # a capped query that sees one key (the first causal row) takes exactly that key's value
    assert torch.allclose(
        attend(q, *square, causal=True, softcap=1.0)[:, :, 0],
        square[1].repeat_interleave(4 // groups, dim=1)[:, :, 0],
        atol=1e-6,
    )
