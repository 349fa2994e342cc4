"""Decoding: cached == uncached, beam search is exact where it can be checked, scores are real log-probs."""

import itertools
import math

import pytest
import torch
from torch import nn

from captioner.config import CaptionerConfig
from captioner.generate import GenerationConfig, TokenIds, generate, greedy
from captioner.model import Captioner
from tests.test_decoder import STYLES

IDS = TokenIds(bos_id=1, eos_id=2, pad_id=0)


def make_model(seed: int, vocab: int = 40, eos_bias: float = 0.0, style: str = "gpt") -> Captioner:
    """The tiny model with peaked, image-dependent outputs and an EOS bias; `style` "llama": a Llama-style decoder
    (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head, cross-attention in its second block)."""
    torch.manual_seed(seed)
    cfg = CaptionerConfig.from_name("tiny", vocab_size=vocab, n_layer=2, **STYLES[style])
    model = Captioner(cfg).eval()
    for p in [*model.decoder.parameters(), *model.encoder.proj.parameters()]:  # peaked, image-dependent outputs
        p.data.mul_(4.0)
    head = nn.Linear(cfg.n_embd, vocab)
    head.weight = model.decoder.lm_head.weight
    nn.init.zeros_(head.bias)
    head.bias.data[IDS.eos_id] = eos_bias
    model.decoder.lm_head = head
    return model


def uncached_greedy(model: Captioner, images: torch.Tensor, steps: int) -> list[list[int]]:
    """One image at a time, full forward pass every step, no cache."""
    out = []
    for i in range(images.size(0)):
        ids = torch.tensor([[IDS.bos_id]], device=images.device)
        for _ in range(steps):
            nxt = int(model(images[i : i + 1], ids)[0, -1].argmax())
            if nxt == IDS.eos_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]], device=images.device)], dim=1)
        out.append(ids[0, 1:].tolist())
    return out


def sequence_logprob(model: Captioner, image: torch.Tensor, tokens: list[int], ended: bool) -> float:
    """Sum of log-probs of `tokens` (+ EOS if `ended`) by one plain forward pass."""
    target = [*tokens, IDS.eos_id] if ended else tokens
    ids = torch.tensor([[IDS.bos_id, *target]])
    logp = model(image[None], ids[:, :-1]).log_softmax(-1)[0]  # (T, V)
    return float(logp.gather(1, torch.tensor(target)[:, None]).sum())


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(8, 3, 32, 32)


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("seed", "style"), [*((s, "gpt") for s in range(4)), (1, "llama"), (2, "llama")])
@torch.no_grad()
def test_cached_greedy_equals_uncached_exactly(seed, style, device, images):
    torch.backends.cuda.matmul.allow_tf32 = False  # exact comparisons in fp32
    images = images.to(device)
    lengths: set[int] = set()
    bos = torch.full((images.size(0), 1), IDS.bos_id, device=device)
    logits = make_model(seed, style=style).to(device)(images, bos)[:, -1]  # (B, V)
    spread = float(logits.max(-1).values.mean() - logits[:, IDS.eos_id].mean())
    model = make_model(seed, style=style).to(device)
    for bias in torch.linspace(0, 1.5 * spread, 80):  # an EOS bias where sequences end at different steps
        model.decoder.lm_head.bias.data[IDS.eos_id] = bias  # as make_model(seed, eos_bias=bias) would set it
        cached = greedy(model, images, IDS.bos_id, IDS.eos_id, IDS.pad_id, max_new_tokens=10)
        lengths = {len(r) for r in cached}
        if len(lengths) >= 3:
            break
    assert len(lengths) >= 2
    assert cached == uncached_greedy(model, images, 10)


class Uncached:
    """The decoder's cache API, uncached: every step runs the whole prefix of each row through a plain forward pass
    (rows reordered with the cache, as beam search does); what `generate` is checked against."""

    def __init__(self, model: Captioner) -> None:
        self.decoder = model.decoder
        self.rows: torch.Tensor | None = None

    def set_kv_cache(self, batch_size: int, max_len: int | None = None, **_) -> None:
        self.rows = None

    def hidden(self, ids: torch.Tensor, kv, start: int | None = None, attention=None) -> torch.Tensor:
        self.rows = ids if self.rows is None else torch.cat([self.rows, ids], dim=1)  # (R, start + 1)
        return type(self.decoder).hidden(self.decoder, self.rows, kv)[:, -1:]

    def reorder_kv_cache(self, index: torch.Tensor) -> None:
        self.rows = self.rows.index_select(0, index)

    def clear_kv_cache(self) -> None:
        self.rows = None


CACHE_CASES = [
    {"max_new_tokens": 10},
    {"max_new_tokens": 10, "num_beams": 3, "num_return_sequences": 3},
    {"max_new_tokens": 10, "do_sample": True, "seed": 5, "num_return_sequences": 3, "temperature": 1.5},
]


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("options", CACHE_CASES, ids=["greedy", "beams", "sampling"])
def test_cached_decoding_equals_uncached_token_for_token(options, style, images, monkeypatch):
    model = make_model(3, eos_bias=2.0, style=style)  # an EOS bias where captions end at different steps
    cfg = GenerationConfig(**options)
    cached = generate(model, images, IDS, cfg)
    uncached = Uncached(model)
    for name in ("set_kv_cache", "hidden", "reorder_kv_cache", "clear_kv_cache"):
        monkeypatch.setattr(model.decoder, name, getattr(uncached, name))
    plain = generate(model, images, IDS, cfg)
    assert [[h.tokens for h in hyps] for hyps in cached] == [[h.tokens for h in hyps] for hyps in plain]
    assert len({len(h.tokens) for hyps in plain for h in hyps}) > 1  # captions of different lengths
    for a, b in zip(cached, plain, strict=True):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_one_beam_equals_greedy(seed, images):
    model = make_model(seed, eos_bias=2.0)
    g = generate(model, images, IDS, GenerationConfig(max_new_tokens=10))
    b = generate(model, images, IDS, GenerationConfig(max_new_tokens=10, num_beams=1))
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]


def exhaustive_best(model, image, vocab: int, max_new: int, length_penalty: float) -> tuple[list[int], float]:
    best = (None, -math.inf)
    for n in range(max_new + 1):
        for prefix in itertools.product([t for t in range(vocab) if t != IDS.eos_id], repeat=n):
            tokens, ended = list(prefix), n < max_new  # at max_new_tokens a sequence stops without EOS
            if True:
                length = n + ended
                score = sequence_logprob(model, image, tokens, ended) / length**length_penalty
                if score > best[1]:
                    best = (tokens, score)
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@torch.no_grad()
def test_beam_search_finds_the_true_best_sequence(length_penalty, images):
    vocab, max_new = 5, 3
    model = make_model(5, vocab=vocab, eos_bias=1.0)
    cfg = GenerationConfig(max_new_tokens=max_new, num_beams=vocab**max_new, length_penalty=length_penalty)
    hyps = generate(model, images[:2], IDS, cfg)
    for i in range(2):
        tokens, score = exhaustive_best(model, images[i], vocab, max_new, length_penalty)
        assert hyps[i][0].tokens == tokens
        assert hyps[i][0].score == pytest.approx(score, abs=1e-4)


@torch.no_grad()
def test_beam_scores_are_recomputed_log_probs(images):
    model = make_model(1, eos_bias=1.5)
    cfg = GenerationConfig(max_new_tokens=8, num_beams=4, num_return_sequences=3, length_penalty=0.7)
    for image, hyps in zip(images, generate(model, images, IDS, cfg), strict=True):
        assert len(hyps) == 3 and hyps[0].score >= hyps[1].score >= hyps[2].score
        for h in hyps:
            ended = len(h.tokens) < 8
            lp = sequence_logprob(model, image, h.tokens, ended)
            assert h.logprob == pytest.approx(lp, abs=1e-4)
            assert h.score == pytest.approx(lp / (len(h.tokens) + ended) ** 0.7, abs=1e-4)


def test_beam_options(images):
    model = make_model(2, eos_bias=3.0)
    short = generate(model, images, IDS, GenerationConfig(num_beams=3, min_new_tokens=5, max_new_tokens=7))
    assert all(5 <= len(h[0].tokens) <= 7 for h in short)
    no_rep = generate(model, images, IDS, GenerationConfig(num_beams=3, max_new_tokens=12, no_repeat_ngram_size=2))
    for hyps in no_rep:
        t = hyps[0].tokens
        bigrams = list(zip(t, t[1:], strict=False))
        assert len(bigrams) == len(set(bigrams))
    rep = generate(model, images, IDS, GenerationConfig(max_new_tokens=12, repetition_penalty=1e6, min_new_tokens=12))
    for hyps in rep:
        assert len(hyps[0].tokens) == len(set(hyps[0].tokens))


def test_top_k_one_sampling_equals_greedy(images):
    model = make_model(4, eos_bias=2.0)
    g = generate(model, images, IDS, GenerationConfig(max_new_tokens=10))
    s = generate(model, images, IDS, GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1, seed=0))
    assert [h[0].tokens for h in g] == [h[0].tokens for h in s]


def test_seeded_sampling_is_reproducible_and_varied(images):
    model = make_model(4, eos_bias=0.0)
    cfg = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.5, top_p=0.95, num_return_sequences=4)
    a = generate(model, images, IDS, GenerationConfig(**{**cfg.__dict__, "seed": 7}))
    b = generate(model, images, IDS, GenerationConfig(**{**cfg.__dict__, "seed": 7}))
    assert [[h.tokens for h in x] for x in a] == [[h.tokens for h in x] for x in b]
    assert all(len(x) == 4 for x in a)
    assert len({tuple(h.tokens) for x in a for h in x}) > 4


def test_image_kv_once_and_shared_by_beams(images):
    model = make_model(0)
    calls = []
    for block in model.decoder.h:
        block.cross.kv_proj.register_forward_hook(lambda _m, _i, out: calls.append(out.shape[0]))
    generate(model, images, IDS, GenerationConfig(num_beams=3, max_new_tokens=6))
    assert calls == [images.size(0)] * model.config.n_layer  # once per layer, one row per image (not per beam)
    llama = make_model(0, style="llama")  # cross-attention in block 1 only: one projection per call
    calls.clear()
    llama.decoder.h[1].cross.kv_proj.register_forward_hook(lambda _m, _i, out: calls.append(out.shape[0]))
    generate(llama, images, IDS, GenerationConfig(num_beams=3, max_new_tokens=6))
    assert calls == [images.size(0)] and llama.decoder.h[0].cross is None


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="num_return_sequences"):
        GenerationConfig(num_return_sequences=3).validate()
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(do_sample=True, temperature=0).validate()


@pytest.mark.parametrize(
    "options",
    [
        {"num_beams": 0},
        {"top_k": -5},
        {"max_new_tokens": -1},
        {"num_return_sequences": 0},
        {"repetition_penalty": 0.0},
        {"length_penalty": float("nan")},
        {"temperature": float("nan"), "do_sample": True},
        {"min_new_tokens": -1},
    ],
    ids=lambda o: ",".join(o),
)
def test_decoding_options_that_make_nonsense_are_refused(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        GenerationConfig(**options).validate()


@pytest.mark.parametrize("flags", [["--num-beams", "0"], ["--repetition-penalty", "0"], ["--length-penalty", "nan"]])
def test_the_commands_refuse_them_in_one_line(flags, trained_package, tmp_path, capsys):
    from captioner.cli import main
    from captioner.shapes import make_scene

    image = tmp_path / "a.png"
    make_scene("test", 0).image.save(image)
    for command in (["caption", str(trained_package), str(image)], ["evaluate", str(trained_package)]):
        assert main([*command, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("captioner: error:") and "\n" not in err


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_caption_cut_by_the_token_limit_is_marked_truncated(num_beams, images):
    model = make_model(0)
    special = IDS
    cut = GenerationConfig(max_new_tokens=3, min_new_tokens=3, num_beams=num_beams)  # no EOS can come in time
    assert all(h.truncated and len(h.tokens) == 3 for hyps in generate(model, images, special, cut) for h in hyps)
    ended = GenerationConfig(max_new_tokens=3, num_beams=num_beams)
    eos_model = make_model(0, eos_bias=50.0)  # EOS first: every caption ends by itself
    assert not any(h.truncated for hyps in generate(eos_model, images, special, ended) for h in hyps)


def test_the_default_token_limit_is_the_model_block_size(images):
    model = make_model(0)
    never_ends = GenerationConfig(min_new_tokens=10_000)
    hyps = generate(model, images, IDS, never_ends)
    assert {len(h[0].tokens) for h in hyps} == {model.config.block_size - 1}


BEAM_CASES = [
    {"num_beams": 3},
    {"num_beams": 4, "num_return_sequences": 4, "length_penalty": 0.0},
    {"num_beams": 5, "length_penalty": 2.0, "min_new_tokens": 3},
    {"num_beams": 3, "early_stopping": True, "num_return_sequences": 2},
    {"num_beams": 4, "no_repeat_ngram_size": 2, "repetition_penalty": 1.3},
    {"num_beams": 6, "length_penalty": -0.5, "num_return_sequences": 6},
]


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("eos_bias", [0.0, 2.0])
@pytest.mark.parametrize("vocab", [4, 40])  # 4 tokens: fewer live continuations than beams, dead beams
@pytest.mark.parametrize("options", BEAM_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_tensor_beam_search_equals_the_per_image_loop(options, vocab, eos_bias, style, images):
    from tests.beam_reference import reference_beam_search

    model = make_model(7, vocab=vocab, eos_bias=eos_bias, style=style)
    cfg = GenerationConfig(max_new_tokens=9, **options)
    got = generate(model, images, IDS, cfg)
    want = reference_beam_search(model, images, IDS, cfg)
    assert got == want  # tokens, scores, log-probs and truncation flags, hypothesis for hypothesis
    assert any(len(h) > 1 for h in got) == (cfg.num_return_sequences > 1)


def test_vectorised_ngram_ban_equals_the_row_loop():
    from captioner.decoding import ban_repeated_ngrams as _ban_repeated_ngrams
    from tests.beam_reference import reference_ban_repeated_ngrams

    torch.manual_seed(0)
    for n in (1, 2, 3):
        for length in range(0, 9):
            history = torch.randint(0, 5, (6, length))
            a, b = torch.randn(6, 7), None
            b = a.clone()
            _ban_repeated_ngrams(a, history, n)
            reference_ban_repeated_ngrams(b, history, n)
            assert torch.equal(a, b), (n, length)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoding_reads_the_host_a_fixed_number_of_times(num_beams, images, monkeypatch):
    """With the "all done" check spaced past the token limit (as on an accelerator, every few steps), no host read
    happens inside the step loop: 8 and 16 steps read the same number of times."""
    import captioner.beam_search
    import captioner.generate

    for module in (captioner.generate, captioner.beam_search):
        monkeypatch.setattr(module, "check_every", lambda device: 1000)
    reads = []
    for name in ("tolist", "item", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
    model = make_model(0)
    counts = []
    for steps in (8, 16):
        reads.clear()
        generate(model, images, IDS, GenerationConfig(max_new_tokens=steps, min_new_tokens=steps, num_beams=num_beams))
        counts.append(len(reads))
    assert counts[0] == counts[1]
