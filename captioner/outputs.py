"""Writing results without ever losing a user's data: THE atomic-write helpers (a file, a folder), and the checks
that refuse, before any work, an output that cannot be written or that is one of the inputs. The caption rows that
a run streams, and resuming them, are `captioner.runs.writers`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from captioner.errors import NamesArguments


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", overwrite: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on success it is flushed, fsynced and renamed over `path`
    (a rename within one folder cannot be half done), on failure removed. `mode` is "w" (UTF-8 text) or "wb"."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExists("{path} exists; pass {0} to replace it", ("overwrite", True), path=path)
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
        raise OutputExists("{path} exists; choose another folder or pass {0}", ("overwrite", True), path=directory)
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
    an input: writing it (or replacing it) could destroy what the command only reads. Paths are
    compared after resolving symbolic links; each input is resolved once, however many outputs there are."""
    sources = {Path(os.path.realpath(item)): item for item in inputs}
    holders = {parent: item for src, item in sources.items() for parent in src.parents}
    for output in outputs:
        out = Path(os.path.realpath(output))
        inside = next((sources[p] for p in out.parents if p in sources), None)
        for found, where in ((sources.get(out), "is"), (inside, "lies inside"), (holders.get(out), "holds")):
            if found is not None:
                raise OutputError(
                    f"{option} {output} {where} the input {found}; the command only reads that, so "
                    "choose an output outside it"
                )


class OutputError(NamesArguments, ValueError):
    """An output that must not be written to (an input, someone else's rows, another run holds it); nothing changed.
    Its message names the caller's arguments (`captioner.errors`)."""


class OutputExists(NamesArguments, FileExistsError):
    """An output that exists, and the caller did not ask to replace it."""


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask
