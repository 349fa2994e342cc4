"""Recaptioning a sharded dataset, shard by shard, in this process (the local engine): each input shard (a
webdataset tar or a parquet file, `captioner.data.shard_items`) is captioned batch by batch through the core
(`captioner.runs.files.caption_items`, so the model's own preprocessing and decoding) into one parquet file named
after it (`out/00000.parquet`, `captioner.runs.parquet_rows`; or a webdataset tar, `captioner.runs.tar_rows`),
written atomically, then a done marker beside it (`out/00000.parquet.done`: {"rows", "errors", "seconds"}).

- `resume`: shards with a done marker (and their parquet) are skipped and counted; the rest run.
- A shard that raises while it is read (a truncated tar, a damaged parquet) is tried again, `retries` times, then
  named in `ShardRun.failed` while the other shards go on; its output is never left half written.
- An image that does not decode is an error row; its shard completes.
- An output folder that holds outputs of these shards is refused unless `resume` or `overwrite`.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

import torch
from tqdm import tqdm

from captioner.data.images import ImageDecodeError, load_rgb
from captioner.data.shard_items import ShardItem, shard_items
from captioner.decoding import CaptionModel
from captioner.device import autocast
from captioner.generate import GenerationConfig
from captioner.outputs import OutputExists, atomic_file, write_text
from captioner.preprocess import Transform
from captioner.runs.files import RunOptions, caption_items
from captioner.runs.parquet_rows import require_pyarrow, schema, table
from captioner.runs.tar_rows import TarRows
from captioner.tokenizer import CaptionTokenizer

DONE_SUFFIX = ".done"
SUFFIXES = {"parquet": "parquet", "webdataset": "tar"}  # the output formats, and their files' suffixes
SHARD_FAULTS = (OSError, ValueError, EOFError, tarfile.TarError)  # what a damaged shard raises while it is read


@dataclass
class ShardRun:
    """How a run over shards went."""

    done: list[str] = field(default_factory=list)  # input shards captioned by this run
    skipped: list[str] = field(default_factory=list)  # input shards already done (resume)
    failed: dict[str, str] = field(default_factory=dict)  # input shard -> why, after every try
    rows: int = 0
    errors: int = 0  # error rows (images that could not be captioned) in the shards done
    retried: int = 0  # tries that failed and were tried again


def output_path(shard: str, output: Path, output_format: str = "parquet") -> Path:
    """The output of an input shard: named after it (`shards/00000.tar` -> `out/00000.parquet` or, for a webdataset
    output, `out/00000.tar`)."""
    name = Path(shard).name
    stem = name[: -len(".parquet")] if name.lower().endswith(".parquet") else Path(name).stem
    return output / f"{stem}.{SUFFIXES[output_format]}"


def done_path(out: Path) -> Path:
    return out.with_name(out.name + DONE_SUFFIX)


def outputs_of(shards: list[str], output: Path, output_format: str = "parquet") -> dict[str, Path]:
    """Each input shard's output; ValueError for an unknown format, a webdataset output of a parquet input, or two
    shards that would write the same name."""
    if output_format not in SUFFIXES:
        raise ValueError(f"output_format={output_format!r}: must be one of {', '.join(SUFFIXES)}")
    if output_format == "webdataset" and any(s.lower().endswith(".parquet") for s in shards):
        raise ValueError("a webdataset output holds the input's own samples: give .tar shards, or write parquet")
    outs: dict[str, Path] = {}
    by_out: dict[Path, str] = {}
    for shard in shards:
        out = output_path(shard, output, output_format)
        if out in by_out:
            raise ValueError(
                f"{by_out[out]} and {shard} would both be written to {out}; give shards with distinct names"
            )
        outs[shard], by_out[out] = out, shard
    return outs


def check_outputs(
    shards: list[str], output: Path, resume: bool, overwrite: bool, output_format: str = "parquet"
) -> None:
    """OutputExists when `output` already holds an output of these shards and neither `resume` nor `overwrite`."""
    if resume or overwrite:
        return
    for out in outputs_of(shards, output, output_format).values():
        for path in (out, done_path(out)):
            if path.exists():
                raise OutputExists(
                    "{path} exists; pass {0} to skip the shards already done or {1} to caption them again",
                    ("resume", True),
                    ("overwrite", True),
                    path=path,
                )


def caption_shards(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    shards: list[str],
    output: str | Path,
    *,
    generation: GenerationConfig | None = None,
    options: RunOptions | None = None,
    retries: int = 2,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
    output_format: str = "parquet",
) -> ShardRun:
    """Caption every input shard into its output file in folder `output` (see the module's docstring): parquet, or
    `output_format="webdataset"` (`captioner.runs.tar_rows`); `metadata` (the model, the decoding options) goes into
    every parquet file's key-value metadata."""
    if output_format == "parquet":
        require_pyarrow()
    options = options or RunOptions()
    options.validate()
    if retries < 0:
        raise ValueError(f"retries={retries}: must be 0 or more")
    output = Path(output)
    outs = outputs_of(shards, output, output_format)
    check_outputs(shards, output, options.resume, overwrite, output_format)
    output.mkdir(parents=True, exist_ok=True)
    run = ShardRun()
    file_schema = schema(metadata) if output_format == "parquet" else None
    transform = model.preprocessing.eval_transform()
    bar = tqdm(total=len(shards), unit="shard", desc="captioning shards", disable=not options.progress)
    with bar:
        for shard in shards:
            out = outs[shard]
            if options.resume and out.is_file() and done_path(out).is_file():
                run.skipped.append(shard)
                bar.update(1)
                continue
            for attempt in range(retries + 1):
                try:
                    rows, errors = _caption_shard(
                        model, tokenizer, shard, out, transform, generation, options, file_schema
                    )
                except SHARD_FAULTS as err:
                    reason = f"{type(err).__name__}: {err}"
                    if attempt < retries:
                        run.retried += 1
                        continue
                    run.failed[shard] = f"{reason} (tried {retries + 1} times)"
                    break
                run.done.append(shard)
                run.rows, run.errors = run.rows + rows, run.errors + errors
                break
            bar.update(1)
    return run


def _caption_shard(
    model: CaptionModel,
    tokenizer: CaptionTokenizer,
    shard: str,
    out: Path,
    transform: Transform,
    generation: GenerationConfig | None,
    options: RunOptions,
    file_schema: Any,
) -> tuple[int, int]:
    """One shard into `out` (atomically), then its done marker; (rows, error rows). `file_schema`: the parquet
    output's, None for a webdataset output."""
    start = time.perf_counter()
    rows = errors = 0
    done_path(out).unlink(missing_ok=True)  # the marker goes before the file it vouches for is replaced
    with atomic_file(out, "wb") as f, _sink(f, file_schema) as write:
        with torch.inference_mode(), autocast(model.device, options.precision):
            for items in _batches(shard_items(shard), options.batch_size):
                decoded = [decode_item(it, transform, options.max_image_pixels) for it in items]
                captioned = caption_items(model, tokenizer, decoded, generation)
                write(items, captioned)
                rows += len(items)
                errors += sum("error" in r for r in captioned)
    seconds = round(time.perf_counter() - start, 3)
    write_text(done_path(out), json.dumps({"rows": rows, "errors": errors, "seconds": seconds}) + "\n")
    return rows, errors


@contextlib.contextmanager
def _sink(file: IO[bytes], file_schema: Any) -> Iterator[Callable[[list[ShardItem], list[dict[str, Any]]], None]]:
    """A function writing one batch's items and rows to `file`: parquet row groups (`file_schema`), or tar samples."""
    if file_schema is None:
        tar = TarRows(file)
        try:
            yield tar.write
        finally:
            tar.close()
        return
    import pyarrow.parquet as pq

    with pq.ParquetWriter(file, file_schema) as writer:
        yield lambda items, rows: writer.write_table(table(items, rows, file_schema))


def decode_item(item: ShardItem, transform: Transform, max_pixels: int) -> dict[str, Any]:
    """An item as `caption_items` takes it: {"path": key, "image"} or {"path": key, "error"}."""
    if item.error is not None or item.image is None:
        return {"path": item.key, "error": item.error or "no image"}
    try:
        return {"path": item.key, "image": transform(load_rgb(item.image, max_pixels))}
    except ImageDecodeError as err:
        return {"path": item.key, "error": str(err).replace("<bytes>", item.source, 1)}


def _batches(items: Iterable[ShardItem], size: int) -> Iterator[list[ShardItem]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
