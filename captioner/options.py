"""The options a caller gives, each declared once: an `Option` holds its default, help, range or choices and page
control, and sits on a dataclass field (`GenerationConfig`, `RunOptions`) or stands alone (the options every way of
captioning shares, below). From them come the command-line flags, the API's query parameters and docs, the page's
controls and the one range check (`Spec.check`). Text (flags, query parameters) parses as plain ASCII decimals
only; Python's own `int()` and `float()` also take "1_6", Unicode digits, surrounding spaces, "nan" and "inf"."""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from captioner.data.images import DEFAULT_MAX_PIXELS
from captioner.errors import ArgumentError

INTEGER = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class Control:
    """The page's control of an option: a checkbox for a bool, else a slider from `low` to `high` (None: the end of
    the option's range, narrowed by what the server allows) in `step`s."""

    label: str
    low: float = 0
    high: float | None = None
    step: float = 1


@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    low: float | None = None  # the range, both ends included
    high: float | None = None
    why: str = ""  # why the range ends there
    choices: tuple[str, ...] = ()
    control: Control | None = None  # None: not on the page

    def field(self) -> Any:  # what a dataclass field's default is
        return field(default=self.default, metadata={"option": self})


def option(default: Any, help: str, **declared: Any) -> Any:
    """A dataclass field declaring an option: `num_beams: int = option(1, "beams (1: greedy)", low=1, high=256)`."""
    return Option(default, help, **declared).field()


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


PARSE: dict[type, Callable[[str], Any]] = {bool: parse_bool, int: parse_int, float: parse_float, str: str}
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a decimal number", str: "text"}


@dataclass(frozen=True)
class Spec:
    """An option by name, with the type its values have (of `X | None`: X; `optional` says None means unset)."""

    name: str
    kind: type
    optional: bool
    option: Option

    @classmethod
    def of(cls, name: str, option: Option) -> Spec:
        """A standalone option; its type is its default's."""
        return cls(name, type(option.default), False, option)

    def parse(self, text: str) -> Any:
        """The value from text; ValueError saying what it takes."""
        return PARSE[self.kind](text)

    def check(self, value: Any) -> None:
        """ArgumentError naming the option unless `value` is of its type, in its range (ends included) or choices."""
        if value is None and self.optional:
            return
        low, high, choices = self.option.low, self.option.high, self.option.choices
        numeric = self.kind in (int, float)
        if not is_of(value, self.kind):
            raise ArgumentError(f"{{0}}: must be {TYPE_NAMES[self.kind]}", (self.name, value))
        if numeric and low is not None and high is not None and not (math.isfinite(value) and low <= value <= high):
            why = f" ({self.option.why})" if self.option.why else ""
            raise ArgumentError(f"{{0}}: must be between {number(low)} and {number(high)}{why}", (self.name, value))
        if choices and value not in choices:
            raise ArgumentError(f"{{0}}: must be one of {', '.join(choices)}", (self.name, value))

    def describe(self) -> str:
        """The help and the range, as the flags and the API docs show it."""
        low, high = self.option.low, self.option.high
        ranged = f"; {number(low)} to {number(high)}" if low is not None and high is not None else ""
        return self.option.help + ranged


def is_of(value: Any, kind: type) -> bool:
    """Whether `value` has type `kind`: a whole number is a decimal one too, true and false are no numbers."""
    wanted = int if kind is int else (int, float) if kind is float else kind
    return isinstance(value, bool) == (kind is bool) and isinstance(value, wanted)


def number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


@functools.cache
def specs(cls: type) -> dict[str, Spec]:
    """The options of dataclass `cls`, by field name, in field order (fields without an `Option` are not options);
    types come from `typing.get_type_hints`, never from the annotation's text."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if "option" in f.metadata:
            kind, optional = hints[f.name], False
            if isinstance(kind, types.UnionType):  # `int | None`: the value's own type
                optional = type(None) in typing.get_args(kind)
                kind = next(k for k in typing.get_args(kind) if k is not type(None))
            out[f.name] = Spec(f.name, kind, optional, f.metadata["option"])
    return out


def check_options(obj: object) -> None:
    """Every option of dataclass instance `obj` checked (`Spec.check`); ArgumentError naming the first bad one."""
    kind: type = type(obj)
    for name, spec in specs(kind).items():
        spec.check(getattr(obj, name))


def parse_option(cls: type, name: str, text: str) -> Any:
    """The value of option `name` of dataclass `cls` from text; ValueError naming the option and what it takes."""
    if name not in specs(cls):
        raise ValueError(f"unknown option {name!r}; the options are {', '.join(specs(cls))}")
    try:
        return specs(cls)[name].parse(text)
    except ValueError as err:
        raise ValueError(f"{name}={err}") from None


def from_text(cls: type, texts: dict[str, str]) -> Any:
    """A dataclass `cls` from option names and their text, validated (its `validate()`, else `check_options`);
    ValueError naming the first bad one."""
    obj = cls(**{name: parse_option(cls, name, text) for name, text in texts.items()})
    getattr(obj, "validate", lambda: check_options(obj))()
    return obj


# the options every way of captioning shares (`captioner.caption`, `caption_files`, caption, evaluate, serve)
BATCH_SIZE = Option(32, "images captioned together", low=1, high=65_536, why="a batch is held in memory at once")
DEVICE = Option("auto", "auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N")
PRECISION = Option(
    "32", "autocast: bf16 (GPU, or a CPU with AVX512-BF16/AMX), 16 (GPU) or 32", choices=("32", "bf16", "16")
)
# 64 M pixels (8000 x 8000) for files a user captions: a camera's largest photos pass, a decompression bomb does
# not. The server takes less, for uploads from anyone (`captioner.serve.api.Limits.max_pixels`).
MAX_IMAGE_PIXELS = Option(
    DEFAULT_MAX_PIXELS, "refuse larger images (decompression bombs)", low=1, high=10**12, why="a pixel count"
)
