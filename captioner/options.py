"""Decoding options from text (command-line flags, query parameters): each `GenerationConfig` field's type is read
from the dataclass once, and numbers parse as plain ASCII decimals only; Python's own `int()` and `float()` also take
"1_6", Unicode digits, surrounding spaces, "nan" and "inf"."""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from captioner.decoding import GenerationConfig

INTEGER = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def parse_int(text: str) -> int:
    """ASCII digits with an optional sign, e.g. "16" or "-3"; ValueError otherwise."""
    if not INTEGER.fullmatch(text) or len(text) > 40:
        raise ValueError(f"{text!r} is not a whole number (ASCII digits, e.g. 16)")
    return int(text)


def parse_float(text: str) -> float:
    """An ASCII decimal number, e.g. "0.9", "-1", "1e-3"; ValueError otherwise, and for one that overflows."""
    value = float(text) if DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite decimal number (ASCII, e.g. 0.9 or 1e-3)")
    return value


def parse_bool(text: str) -> bool:
    if text.lower() not in BOOLEANS:
        raise ValueError(f"{text!r} is not true or false (or 1 / 0)")
    return BOOLEANS[text.lower()]


def _parser(kind: Any) -> Callable[[str], Any]:
    if isinstance(kind, types.UnionType):  # `int | None`: the value's own type
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    return {bool: parse_bool, int: parse_int, float: parse_float}[kind]


# field name -> the parser of its type (bool before int: a bool is an int to Python)
PARSERS: dict[str, Callable[[str], Any]] = {
    f.name: _parser(typing.get_type_hints(GenerationConfig)[f.name]) for f in fields(GenerationConfig)
}


def parse_option(name: str, text: str) -> Any:
    """The value of decoding option `name` from text; ValueError naming the option and what it takes."""
    if name not in PARSERS:
        raise ValueError(f"unknown option {name!r}; the options are {', '.join(PARSERS)}")
    try:
        return PARSERS[name](text)
    except ValueError as err:
        raise ValueError(f"{name}={err}") from None


def generation_from_text(options: dict[str, str]) -> GenerationConfig:
    """A validated GenerationConfig from option names and their text; ValueError naming the first bad one."""
    config = GenerationConfig(**{name: parse_option(name, text) for name, text in options.items()})
    config.validate()
    return config
