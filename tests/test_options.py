"""Options said once: every `GenerationConfig` field is a flag of `caption` and `evaluate` and a query parameter of
the API with the same default, type and range; the shared options have one default wherever they appear; the range
check is the declaration's."""

import inspect
import re
import typing
from dataclasses import fields

import pytest

import captioner
from captioner.cli.caption import caption_parser
from captioner.cli.evaluate import evaluate_parser
from captioner.decoding import GenerationConfig
from captioner.errors import ArgumentError
from captioner.options import BATCH_SIZE, DEVICE, MAX_IMAGE_PIXELS, PRECISION, Option, check_options, option, specs
from captioner.runs.files import RunOptions

PARSERS = {"caption": caption_parser(), "evaluate": evaluate_parser()}


def flags(parser) -> dict[str, object]:
    """flag -> its action, for every long flag of `parser`."""
    return {flag: action for action in parser._actions for flag in action.option_strings if flag.startswith("--")}


@pytest.fixture(scope="module")
def query_parameters(tmp_path_factory) -> dict[str, dict]:
    from fastapi.testclient import TestClient

    from captioner.config import CaptionerConfig
    from captioner.model import Captioner
    from captioner.serve.api import Limits, Service, create_api
    from captioner.tokenizer import CaptionTokenizer

    tokenizer = CaptionTokenizer.train(["a red circle", "a blue square"], vocab_size=280)
    model = Captioner(CaptionerConfig.from_name("tiny", vocab_size=tokenizer.vocab_size))
    service = Service(model, tokenizer, "tiny", Limits())
    try:
        docs = TestClient(create_api(service)).get("/openapi.json").json()
    finally:
        service.batcher.stop()
    return {p["name"]: p for p in docs["paths"]["/caption"]["post"]["parameters"]}


# how the decoder step runs, for a Python caller only: no request may make a server compile (captioner.static_step)
NOT_OPTIONS = {"static", "compile"}
OPTION_FIELDS = [f for f in fields(GenerationConfig) if f.name not in NOT_OPTIONS]


def test_every_decoding_field_but_the_step_mode_is_an_option():
    assert {f.name for f in fields(GenerationConfig)} - set(specs(GenerationConfig)) == NOT_OPTIONS


@pytest.mark.parametrize("field", OPTION_FIELDS, ids=lambda f: f.name)
def test_every_decoding_field_is_a_flag_and_a_query_parameter_with_its_default(field, query_parameters):
    for command, parser in PARSERS.items():
        action = flags(parser).get("--" + field.name.replace("_", "-"))
        assert action is not None and action.dest == field.name, (command, field.name)
        assert action.default == field.default, (command, field.name)
        assert parser.parse_args(["pkg"]).__dict__[field.name] == field.default
    parameter = query_parameters[field.name]
    assert parameter["in"] == "query" and parameter["schema"].get("default") == field.default  # None: none shown
    hint = typing.get_type_hints(GenerationConfig)[field.name]
    kind = next(k for k in (*typing.get_args(hint), hint) if k in (bool, int, float))  # of `int | None`: int
    assert parameter["schema"]["type"] == {bool: "boolean", int: "integer", float: "number"}[kind]


def test_the_query_parameters_are_the_fields_and_carry_their_ranges(query_parameters):
    from captioner.serve.api import CAPS

    assert list(query_parameters) == [f.name for f in OPTION_FIELDS]
    for name, spec in specs(GenerationConfig).items():
        schema = query_parameters[name]["schema"]
        if spec.option.low is not None:
            assert schema["minimum"] == spec.option.low
            assert schema["maximum"] == min(spec.option.high, CAPS.get(name, spec.option.high))
        assert spec.option.help in query_parameters[name]["description"]


def test_a_flag_takes_only_what_its_option_takes(capsys):
    parser = PARSERS["caption"]
    assert parser.parse_args(["pkg", "--temperature", "0.5", "--do-sample", "--top-k", "5"]).temperature == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["pkg", "--num-beams", "1_6"])  # plain ASCII only (Python's int() takes it)
    assert "argument --num-beams: '1_6' is not a whole number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "shared"),
    [("batch_size", BATCH_SIZE), ("max_image_pixels", MAX_IMAGE_PIXELS), ("device", DEVICE), ("precision", PRECISION)],
)
def test_a_shared_option_has_one_default_everywhere(name, shared):
    for command, parser in PARSERS.items():
        action = flags(parser)["--" + name.replace("_", "-")]
        assert action.default == shared.default and shared.help in action.help, command
    if name in {f.name for f in fields(RunOptions)}:
        assert getattr(RunOptions(), name) == shared.default
    public = inspect.signature(captioner.caption).parameters
    if name in public:
        assert public[name].default == shared.default


def test_the_server_takes_fewer_pixels_said_in_its_limits():
    from captioner.serve.limits import Limits

    assert Limits().max_pixels < MAX_IMAGE_PIXELS.default  # uploads from anyone (see Limits)


def test_the_range_check_is_the_declaration(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Things:
        count: int = option(1, "how many", low=1, high=3, why="few")
        scale: float | None = option(None, "how large", low=0.0, high=1.0)
        mode: str = option("a", "which", choices=("a", "b"))
        plain: int = 0  # not an option: never checked

    check_options(Things(plain=-1))
    for bad, says in [
        ({"count": 4}, "count=4: must be between 1 and 3 (few)"),
        ({"count": True}, "count=True: must be a whole number"),
        ({"scale": float("nan")}, "scale=nan: must be between"),
        ({"mode": "c"}, "mode='c': must be one of a, b"),
    ]:
        with pytest.raises(ArgumentError, match=f"^{re.escape(says)}"):
            check_options(Things(**bad))
    assert isinstance(Things.__dataclass_fields__["count"].metadata["option"], Option)
    with pytest.raises(ArgumentError) as refused:
        RunOptions(batch_size=0).validate()
    assert str(refused.value).startswith("batch_size=0: ") and refused.value.as_flags().startswith("--batch-size 0: ")
