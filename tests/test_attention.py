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
