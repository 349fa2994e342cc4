"""The caption rows a run streams: THE row of one caption (`captioner caption`'s, the API's, evaluate's
predictions), written to .jsonl or .csv batch by batch under a lock, and read back to resume (`resume=True`): only
a file of these rows is continued, and a last record cut by a kill is dropped."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import IO, Any

from captioner.inference import Caption
from captioner.outputs import OutputError

CSV_FIELDS = ["path", "caption", "score", "error", "n_best", "truncated"]
ROW_KEYS = set(CSV_FIELDS)
CSV_HEADER = ",".join(CSV_FIELDS).encode() + b"\r\n"  # what csv.DictWriter writes first
JSONL_START = b'{"path": '  # every row json.dumps writes starts so: the path is its first key


def caption_row(path: str, caption: Caption) -> dict[str, Any]:
    """The output row of one image; a score that is not finite is a bug (the decoding options are range-checked so
    that none can be), never written as NaN."""
    if not all(math.isfinite(s) for s in (caption.score, *(s for _, s in caption.n_best))):
        raise RuntimeError(f"{path}: decoding gave a score that is not finite ({caption.score}); please report this")
    row: dict[str, Any] = {"path": path, "caption": caption.text, "score": round(caption.score, 4)}
    if len(caption.n_best) > 1:
        row["n_best"] = [{"caption": c, "score": round(s, 4)} for c, s in caption.n_best]
    if caption.truncated:
        row["truncated"] = True  # cut by the token limit (max_new_tokens or the model's block size)
    return row


class OutputWriter:
    """Appends caption rows to a .jsonl or .csv file, flushed and fsynced after every batch, and holds an exclusive
    lock on the file for its whole life, so that a second run on the same output refuses instead of interleaving.

    With `resume`, the rows already there are read (`done` holds their paths): every complete record must be a
    row this command writes, else the file is refused untouched; a last record cut by a kill is removed by
    truncating the file to the end of the last complete record (parsed as JSON / by CSV quoting, not by lines).
    Without `resume` the file is emptied, after the lock is taken.
    """

    def __init__(self, path: Path, resume: bool) -> None:
        self.path, self.csv = path, path.suffix.lower() == ".csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a+b")  # appending: never truncated before the lock is held
        try:
            _lock(self.file, path)
            self.done: set[str] = set()
            if resume:
                self.file.seek(0)
                data = self.file.read()
                end, self.done = (_csv_rows if self.csv else _jsonl_rows)(data, path)
                if end < len(data):  # a record cut by a kill: dropped, its image is captioned again
                    self.file.truncate(end)
            else:
                self.file.truncate(0)
            if self.csv and os.fstat(self.file.fileno()).st_size == 0:
                self._append(CSV_HEADER)
        except BaseException:
            self.file.close()
            raise

    def write(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO(newline="")
        if self.csv:
            writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
            for row in rows:
                flat = {
                    **row,
                    "n_best": json.dumps(row["n_best"], ensure_ascii=False) if "n_best" in row else "",
                    "truncated": "true" if row.get("truncated") else "",
                }
                writer.writerow({k: flat.get(k, "") for k in CSV_FIELDS})
        else:
            text.writelines(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)
        self._append(text.getvalue().encode("utf-8"))

    def _append(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()  # releases the lock


def _lock(file: IO[Any], path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the output is still never replaced by a rename)
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        raise OutputError(
            "{path} is being written by another captioner run; wait for it to finish or choose another {0}",
            "output",
            path=path,
        ) from err


def _foreign(path: Path, where: str) -> OutputError:
    return OutputError(
        "{path}: {where} is not a row that `captioner caption` writes; {0} only continues its own "
        "output (the file was left as it is). Choose another {1}",
        "resume",
        "output",
        path=path,
        where=where,
    )


def _jsonl_rows(data: bytes, path: Path) -> tuple[int, set[str]]:
    """(end of the last complete row, paths); records end at b"\n" only (a path may hold U+2028 and friends)."""
    paths, start = set(), 0
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        start += len(line) + 1
        try:
            row = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("path"), str) and set(row) <= ROW_KEYS):
            raise _foreign(path, f"line {number}")
        paths.add(row["path"])
    tail = data[start:]
    if tail and not (JSONL_START.startswith(tail) or tail.startswith(JSONL_START)):
        raise _foreign(path, "the last line")
    return start, paths


def _csv_rows(data: bytes, path: Path) -> tuple[int, set[str]]:
    """(end of the last complete record, paths): a record ends at a line break outside quotes, so a kill inside a
    quoted field that holds a line break leaves a record that is not complete."""
    if len(data) < len(CSV_HEADER):
        if not CSV_HEADER.startswith(data):
            raise _foreign(path, "the header")
        return 0, set()
    if not data.startswith(CSV_HEADER):
        raise _foreign(path, "the header")
    end, quoted = len(CSV_HEADER), False
    for i in range(len(CSV_HEADER), len(data)):
        byte = data[i]
        if byte == 0x22:  # '"': doubled quotes inside a quoted field toggle twice
            quoted = not quoted
        elif byte == 0x0A and not quoted:
            end = i + 1
    try:
        text = data[len(CSV_HEADER) : end].decode("utf-8")
    except UnicodeDecodeError as err:
        raise _foreign(path, "a row") from err
    paths = set()
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=2):
        if len(row) != len(CSV_FIELDS) or not row[0]:
            raise _foreign(path, f"record {number}")
        paths.add(row[0])
    return end, paths
