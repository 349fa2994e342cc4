"""Every decoding value a user can type is refused in one line or decoded safely: the ranges keep the arithmetic
finite, numbers parse as plain ASCII decimals, and no row ever holds NaN or inf (property tests drive random extreme
values of every option through `caption` and the API)."""

import json
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from captioner.decoding import LIMITS, GenerationConfig
from captioner.generate import generate
from captioner.options import parse_option, specs
from tests.test_generate import IDS, make_model

# what the issue found breaking the decoding, each with the field the refusal must name
FOUND = [
    ("length_penalty", 1e308),
    ("length_penalty", -1e308),
    ("seed", 10**23),
    ("temperature", 1e-320),
    ("top_p", 1e-300),
    ("repetition_penalty", 1e-308),
    ("num_beams", 10**12),
]


@pytest.mark.parametrize(("name", "value"), FOUND)
def test_the_values_that_broke_decoding_are_refused_naming_the_option(name, value):
    sampling = {"do_sample": True} if name in ("seed", "temperature", "top_p") else {}
    with pytest.raises(ValueError, match=f"^{name}=.*must be between"):
        GenerationConfig(**{name: value, **sampling}).validate()


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_each_range_end_decodes_to_finite_scores(images, name):
    model = make_model(0, eos_bias=1.0)
    low, high, _ = LIMITS[name]
    for value in (low, high):
        options = {"max_new_tokens": 6, name: int(value) if isinstance(low, int) else float(value)}  # the value wins
        if name in ("temperature", "top_k", "top_p", "seed"):
            options["do_sample"] = True
        if name == "num_return_sequences":
            options["num_beams"] = int(value)
        if name == "num_beams" and value == high:
            images = images[:1]
        hyps = [h for image in generate(model, images, IDS, GenerationConfig(**options)) for h in image]
        assert hyps and all(math.isfinite(h.score) and math.isfinite(h.logprob) for h in hyps), options


def test_a_row_whose_every_token_is_banned_ends_with_eos(images):
    model = make_model(0, vocab=6)  # a 1-gram ban runs out of tokens after the 5 that are not EOS
    config = GenerationConfig(no_repeat_ngram_size=1, min_new_tokens=30, max_new_tokens=30)
    for beams in (1, 3):
        hyps = [
            h
            for image in generate(model, images, IDS, GenerationConfig(**{**config.__dict__, "num_beams": beams}))
            for h in image
        ]
        assert all(math.isfinite(h.score) and not h.truncated and len(h.tokens) <= 5 for h in hyps)


@pytest.mark.parametrize("text", ["1_6", "\u0661\u0666", " 16", "16 ", "+", "", "0x10", "1e3", "nan", "inf", "1e999"])
def test_numbers_parse_as_plain_ascii_decimals_only(text):
    with pytest.raises(ValueError, match="num_beams="):
        parse_option(GenerationConfig, "num_beams", text)
    if text not in ("1e3",):
        with pytest.raises(ValueError, match="temperature="):
            parse_option(GenerationConfig, "temperature", text)
    assert parse_option(GenerationConfig, "temperature", "1e-3") == 0.001
    assert parse_option(GenerationConfig, "num_beams", "16") == 16


# random, extreme, malformed: what a careless or hostile user types for each option
TEXTS = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True).map(repr),
    st.sampled_from(
        [
            "1_6",
            "\u0661",
            "1e308",
            "-1e308",
            "1e-320",
            "1e-300",
            "0",
            "-0",
            "true",
            "false",
            "1",
            "2",
            "0.5",
            "1.0",
            "3",
            "",
            " ",
            "nan",
            "Infinity",
            "9" * 50,
        ]
    ),
)


@st.composite
def options(draw: st.DrawFn) -> dict[str, str]:
    """A few options, each either any text or a number drawn from its own range (its ends included), so that many
    examples get past validation and decode."""
    out = {}
    for name in draw(st.lists(st.sampled_from(sorted(specs(GenerationConfig))), max_size=5, unique=True)):
        low, high, _ = LIMITS.get(name, (0, 1, ""))
        if name not in LIMITS:  # a flag
            ranged = st.sampled_from(["true", "false"])
        elif isinstance(low, int):
            ranged = st.integers(int(low), min(int(high), 64)).map(str) | st.sampled_from([str(low), str(high)])
        else:
            ranged = st.floats(low, high).map(repr) | st.sampled_from([repr(low), repr(high)])
        out[name] = draw(ranged | TEXTS)
    if draw(st.booleans()):
        out["do_sample"] = "true"
    return out


OPTIONS = options()


def strict_json(line: str) -> dict:
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in a row: {line}"))


@pytest.fixture(scope="module")
def api(trained_package):
    from fastapi.testclient import TestClient

    from captioner.model import Captioner
    from captioner.serve.api import Limits, Service, create_api

    model, tok = Captioner.from_pretrained(trained_package)
    service = Service(model, tok, "tiny", Limits())
    yield TestClient(create_api(service))
    service.batcher.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=OPTIONS)
def test_random_extreme_options_through_the_api_are_a_row_or_a_4xx(api, options):
    from tests.serve.test_api import png

    answer = api.post("/caption", params=options, files=[("image", ("a.png", png(0), "image/png"))])
    event(f"HTTP {answer.status_code}")
    assert answer.status_code in (200, 422), (options, answer.text)
    body = strict_json(answer.text)
    if answer.status_code == 200:
        assert all(math.isfinite(r["score"]) for r in body["results"])
    else:
        assert "\n" not in body["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=OPTIONS)
def test_random_extreme_options_through_caption_are_a_row_or_one_line(trained_package, tmp_path_factory, options):
    from captioner.cli import main
    from captioner.shapes import make_scene

    folder = tmp_path_factory.mktemp("caption")
    make_scene("test", 0).image.save(folder / "a.png")
    args: list[str] = []
    for name, text in options.items():
        flag = f"--{name.replace('_', '-')}"
        args.append(flag if specs(GenerationConfig)[name].kind is bool else f"{flag}={text}")
    out = folder / "rows.jsonl"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["caption", str(trained_package), str(folder / "a.png"), "-o", str(out), "--workers", "0", *args])
    lines = [line for line in err.getvalue().splitlines() if line.startswith("captioner: error:")]
    event(f"exit {code}")
    assert "Traceback" not in err.getvalue()
    assert code == 0 or (code == 2 and len(lines) == 1), (options, err.getvalue())
    if code == 0:
        assert all(math.isfinite(strict_json(line)["score"]) for line in out.read_text().splitlines())
