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
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

CSV_FIELDS = ["path", "caption", "score", "error", "n_best", "truncated"]


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
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; a file gets what the umask gives
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
    return write_text(
        path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records), overwrite
    )


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
        mask = _umask()
        tmp.chmod(0o777 & ~mask)  # mkdtemp makes 0700: the folder and its files get what the umask gives
        for child in tmp.rglob("*"):
            child.chmod((0o777 if child.is_dir() else 0o666) & ~mask)
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


ROW_KEYS = set(CSV_FIELDS)
CSV_HEADER = ",".join(CSV_FIELDS).encode() + b"\r\n"  # what csv.DictWriter writes first
JSONL_START = b'{"path": '  # every row json.dumps writes starts so: the path is its first key


def check_writable(path: str | Path, option: str, folder: bool = False) -> None:
    """Refuse now, not after the work, a place that cannot be written: `path` is a file to write (or, `folder`, a
    folder to fill); its folder is made if needed and a temporary file is created in it and removed."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise OutputError(
            f"{option} {path} is {'not ' if folder else ''}a folder; give a {'folder' if folder else 'file'} name"
        )
    where = path if folder else path.parent
    blocking = next((p for p in (where, *where.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputError(f"{option} {path}: {blocking} is a file, not a folder; choose another place")
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".captioner-check.", dir=where)
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot write there ({err.strerror or err}); choose another place") from err
    os.close(fd)
    os.unlink(tmp)


def check_apart(outputs: Iterable[str | Path], inputs: Iterable[str | Path], option: str) -> None:
    """Refuse an output that is one of the command's inputs, lies inside an input folder, or is a folder that holds
    an input: writing it (or replacing it with --overwrite) could destroy what the command only reads. Paths are
    compared after resolving symbolic links; each input is resolved once, however many outputs there are."""
    sources = {Path(os.path.realpath(item)): item for item in inputs}
    holders = {parent: item for src, item in sources.items() for parent in src.parents}
    for output in outputs:
        out = Path(os.path.realpath(output))
        inside = next((sources[p] for p in out.parents if p in sources), None)
        for found, where in ((sources.get(out), "is"), (inside, "lies inside"), (holders.get(out), "holds")):
            if found is not None:
                raise OutputError(f"{option} {output} {where} the input {found}; the command only reads that, so "
                                  "choose an output outside it")  # fmt: skip


class OutputError(ValueError):
    """An output file that a run must not write to (someone else's rows, another run holds it); nothing changed."""


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask


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
                flat = {**row, "n_best": json.dumps(row["n_best"], ensure_ascii=False) if "n_best" in row else "",
                        "truncated": "true" if row.get("truncated") else ""}  # fmt: skip
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
            f"{path} is being written by another captioner run; wait for it to finish or choose another --output"
        ) from err


def _foreign(path: Path, where: str) -> OutputError:
    return OutputError(
        f"{path}: {where} is not a row that `captioner caption` writes; --resume only continues its own output "
        "(the file was left as it is). Choose another --output"
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
