"""The static decode step (`captioner.static_step`): the eager step's tokens with the same shapes at every step, and
compiled as one graph (`torch.compile(fullgraph=True)`) that serves every step of a call and every call of the same
shapes."""

import pytest
import torch
from torch._dynamo.utils import counters

from captioner.generate import GenerationConfig, generate
from tests.test_decoder import STYLES, decoder
from tests.test_generate import DEVICES, IDS, make_model

# each way of decoding, with the processors that run between the steps
DECODINGS = {
    "greedy": {},
    "sampling": {
        "do_sample": True,
        "seed": 7,
        "num_return_sequences": 3,
        "temperature": 0.8,
        "top_k": 20,
        "top_p": 0.9,
    },
    "beams": {"num_beams": 3, "num_return_sequences": 2},
    "processors": {"min_new_tokens": 2, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
}


def same_hypotheses(got: list, want: list) -> None:
    """The same tokens and truncation flags, image by image, rank by rank; scores within float32 rounding (the static
    step sums attention over the masked positions too)."""
    assert [[(h.tokens, h.truncated) for h in hyps] for hyps in got] == [
        [(h.tokens, h.truncated) for h in hyps] for hyps in want
    ]
    for hyps, refs in zip(got, want, strict=True):
        for h, r in zip(hyps, refs, strict=True):
            assert h.score == pytest.approx(r.score, abs=1e-5) and h.logprob == pytest.approx(r.logprob, abs=1e-5)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(6, 3, 32, 32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decoding", sorted(DECODINGS))
@pytest.mark.parametrize("style", sorted(STYLES))
def test_the_static_step_gives_the_eager_tokens(style, decoding, device, images):
    torch.backends.cuda.matmul.allow_tf32 = False  # exact comparisons in fp32
    model, images = make_model(1, eos_bias=2.0, style=style).to(device), images.to(device)
    options = {"max_new_tokens": 10, **DECODINGS[decoding]}
    eager = generate(model, images, IDS, GenerationConfig(**options))
    lengths = {len(h.tokens) for hyps in eager for h in hyps}
    assert len(lengths) >= 2  # rows end at different steps: the length mask is what keeps them apart
    same_hypotheses(generate(model, images, IDS, GenerationConfig(static=True, **options)), eager)


@pytest.mark.parametrize("style", sorted(STYLES))
@torch.no_grad()
def test_the_length_mask_hides_what_the_cache_holds_past_the_position(style):
    """Static prefill and steps equal the eager ones though the cache's unwritten positions hold noise."""
    model = decoder(style)
    ids, memory = torch.randint(0, 50, (3, 8)), torch.randn(3, 9, 32)
    kv = model.image_kv(memory)
    model.set_kv_cache(3)
    want = [model.logits(model.hidden(ids[:, :4], kv, start=0))]
    want += [model.logits(model.hidden(ids[:, t : t + 1], kv, start=t)) for t in range(4, 8)]
    for block in model.blocks():
        assert block.attn.kv_cache is not None
        block.attn.kv_cache.k.normal_(), block.attn.kv_cache.v.normal_()
    got = [model.logits(model.hidden(ids[:, :4], kv, start=torch.tensor(0)))]
    got += [model.logits(model.hidden(ids[:, t : t + 1], kv, start=torch.tensor(t))) for t in range(4, 8)]
    model.clear_kv_cache()
    assert (torch.cat(got, dim=1) - torch.cat(want, dim=1)).abs().max() < 1e-4


@pytest.mark.slow  # inductor compiles for seconds: the Llama-style decoder (RoPE, RMSNorm, grouped heads) only
@pytest.mark.parametrize("style", ["llama"])
def test_the_compiled_step_is_one_graph_for_every_step_and_batch(style, images):
    """generate(compile=True) through inductor: no graph break (fullgraph), the eager tokens, and three greedy batches
    and a seeded sampling one of the same shapes compile once (a recompilation raises); 3 beams, rows of another
    shape, compile once more."""
    model = make_model(1, eos_bias=2.0, style=style)
    torch._dynamo.reset()
    counters.clear()
    calls = [({}, images[:3]), ({}, images[3:]), ({}, images[1:4]), (DECODINGS["sampling"], images[:3])]
    calls[-1] = ({**DECODINGS["sampling"], "num_return_sequences": 1}, images[:3])  # rows of the greedy shape
    for i, (options, batch) in enumerate(calls):
        eager = generate(model, batch, IDS, GenerationConfig(max_new_tokens=10, **options))
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            same_hypotheses(
                generate(model, batch, IDS, GenerationConfig(max_new_tokens=10, compile=True, **options)), eager
            )
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    beams = {"max_new_tokens": 10, **DECODINGS["beams"]}
    eager = generate(model, images[:2], IDS, GenerationConfig(**beams))
    same_hypotheses(generate(model, images[:2], IDS, GenerationConfig(compile=True, **beams)), eager)
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"]


@pytest.mark.parametrize("name", ["static", "compile"])
def test_the_step_mode_is_true_or_false(name):
    with pytest.raises(ValueError, match=f"^{name}='yes' must be true or false"):
        GenerationConfig(**{name: "yes"}).validate()
