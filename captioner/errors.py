"""Library errors that name the caller's arguments: as Python spells them (`device='cpu'`, `overwrite=True`) when
`str()`-ed, and as the command's flags (`--device cpu`, `--overwrite`) through `as_flags()`, which is what the
`captioner` command prints. No library error spells a flag itself (tests/test_errors.py reads the raises)."""

from __future__ import annotations

import shlex
from typing import Any

# an argument named by the message: (name, value), or a bare name ("choose another output")
Argument = str | tuple[str, Any]


class NamesArguments(Exception):
    """Mixed into an error class. `template` is a `str.format` string: `{0}`, `{1}`, ... are the `arguments`, named
    fields (`{path}`) plain text from `text`, put in as they are (a path may hold braces)."""

    def __init__(self, template: str, *arguments: Argument, **text: Any) -> None:
        self.template, self.arguments, self.text = template, arguments, text
        super().__init__(self._say(as_python))

    def as_flags(self) -> str:
        """The message with each argument said as a command-line flag."""
        return self._say(as_flag)

    def _say(self, spell: Any) -> str:  # as_python or as_flag
        if not self.arguments and not self.text:
            return self.template  # a message passed on as it is (e.g. one rank's refusal, said on every rank)
        named = [spell(*a) if isinstance(a, tuple) else spell(a) for a in self.arguments]
        return self.template.format(*named, **self.text)

    def __reduce__(self) -> tuple[Any, ...]:  # through pickle (a DataLoader worker, another rank) as it was made
        return _rebuild, (type(self), self.template, self.arguments, self.text)


def _rebuild(cls: type[NamesArguments], template: str, arguments: tuple, text: dict) -> NamesArguments:
    return cls(template, *arguments, **text)


class ArgumentError(NamesArguments, ValueError):
    """A bad argument, or a combination of them, naming each."""


NO_VALUE = object()


def as_python(name: str, value: Any = NO_VALUE) -> str:
    return name if value is NO_VALUE else f"{name}={value!r}"


def as_flag(name: str, value: Any = NO_VALUE) -> str:
    flag = "--" + name.replace("_", "-")
    return flag if value is NO_VALUE or value is True else f"{flag} {shlex.quote(str(value))}"
