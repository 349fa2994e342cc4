"""Reading a .jsonl or .csv table row by row, strictly: every problem is a `DataError` naming the file and line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Input data that cannot be used as it is; the message says where and what to do."""


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) from a .jsonl or .csv file; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".json"):
        raise DataError(f"{path}: unknown table format {suffix!r}; use .jsonl or .csv")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        message = f"{path}: line {line} is not valid UTF-8 (byte {err.start}); re-save the file as UTF-8"
        raise DataError(message) from err
    yield from _csv_rows(text, path) if suffix == ".csv" else _jsonl_rows(text, path)


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """RFC 4180 records (quoted commas and line breaks are one value; only CR/LF end a record)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: no header row; the first line names the columns (e.g. file_name,text)")
        doubled = sorted({c for c in header if header.count(c) > 1})
        if doubled:
            raise DataError(f"{path}: the header names column(s) {doubled} more than once; rename them")
        for values in reader:
            if not values:
                continue
            if len(values) > len(header):
                raise DataError(f"{path}: line {reader.line_num} has {len(values)} fields, the header {len(header)}")
            yield reader.line_num, dict(zip(header, values, strict=False))
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({err})") from err


def _jsonl_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """One JSON object per line; lines end at LF (CRLF too) only: U+2028 and friends are text inside a value."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            msg = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            raise DataError(f"{path}: line {number} is not valid JSON ({msg})") from err
        if not isinstance(row, dict):
            raise DataError(
                f"{path}: line {number} is a JSON {type(row).__name__}, not an object; each line holds one object "
                'with the image and caption columns, e.g. {"file_name": "a.jpg", "text": "a caption"}'
            )
        yield number, row
