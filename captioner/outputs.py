"""Writing results without ever losing a user's data: THE atomic-write helpers (a file, a folder), the JSONL/CSV
row writer that `caption` streams to, and the bookkeeping that lets `--resume` skip what is already written."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

CSV_FIELDS = ["path", "caption", "score", "error", "n_best"]


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", overwrite: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on success it is flushed, fsynced and renamed over `path`
    (a rename within one folder cannot be half done), on failure removed. `mode` is "w" (UTF-8 text) or "wb"."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    """`text` into `path` atomically (see `atomic_file`)."""
    with atomic_file(path, "w", overwrite) as f:
        f.write(text)
    return Path(path)


def write_jsonl(path: str | Path, records: Sequence[dict[str, Any]], overwrite: bool = False) -> Path:
    """Records as JSON lines, atomically; an existing file is replaced only with `overwrite`."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), overwrite)


@contextlib.contextmanager
def atomic_folder(directory: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside `directory` to fill; on success it replaces `directory` (an existing one is
    swapped out first and removed only after the rename), on failure it is removed."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; choose another folder or pass overwrite=True")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class OutputWriter:
    """Appends caption rows to a .jsonl or .csv file and flushes them to disk after every batch."""

    def __init__(self, path: Path, append: bool) -> None:
        self.path, self.csv = path, path.suffix.lower() == ".csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (append and path.exists() and path.stat().st_size > 0)
        self.file = path.open("a" if append else "w", encoding="utf-8", newline="")
        if self.csv:
            self.writer = csv.DictWriter(self.file, fieldnames=CSV_FIELDS)
            if fresh:
                self.writer.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self.csv:
                flat = {**row, "n_best": json.dumps(row["n_best"], ensure_ascii=False) if "n_best" in row else ""}
                self.writer.writerow({k: flat.get(k, "") for k in CSV_FIELDS})
            else:
                self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def done_paths(path: Path) -> set[str]:
    """Paths already in an output file; a last line cut by a kill is dropped from the file."""
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if text and not text.endswith("\n"):  # the last row was cut: rewrite without it
            rows = rows[:-1]
            with atomic_file(path) as f:
                writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                writer.writeheader()
                writer.writerows(rows)
        return {r["path"] for r in rows}
    good, paths = [], set()
    for line in text.splitlines():
        try:
            paths.add(json.loads(line)["path"])
            good.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    if text and (not text.endswith("\n") or len(good) != len(text.splitlines())):
        write_text(path, "".join(line + "\n" for line in good))
    return paths
