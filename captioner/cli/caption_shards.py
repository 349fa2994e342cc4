"""`captioner caption` over shards: webdataset tars or parquet files (brace patterns, globs, paths) recaptioned into
one parquet file per input shard in the `--output` folder (`captioner.runs.shards`), with `--resume` and
`--retries`. Every mistake in the inputs or the output is refused before the model is loaded."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captioner.cli.common import fail, load_model

if TYPE_CHECKING:
    from captioner.generate import GenerationConfig

OUTPUT_FORMATS = ["parquet", "webdataset"]  # captioner.runs.shards.SUFFIXES (not imported: it brings torch)


def is_shard_job(args: argparse.Namespace) -> bool:
    """Shard inputs (.tar / .parquet, brace patterns of them), or `--output-format` given: then the output is a
    folder of shards (a .tar file is never captioned as an image)."""
    from captioner.data.shard_items import looks_like_shards

    return args.output_format is not None or (looks_like_shards(args.inputs) and not args.list_file)


def caption_shards_command(args: argparse.Namespace, gen: GenerationConfig, options: Any) -> int:
    """The shard job of `captioner caption`: exit 0 when every shard was captioned, 1 when any failed (each named),
    2 for a mistake in the command."""
    from captioner.data.shard_items import expand_shards, image_column
    from captioner.data.tables import DataError
    from captioner.outputs import check_apart, check_writable
    from captioner.runs.shards import caption_shards, check_outputs, outputs_of

    if args.output is None or Path(args.output).suffix.lower() in (".jsonl", ".csv"):
        return fail("shards are captioned into one output shard each: give --output FOLDER")
    fmt = args.output_format or "parquet"
    for flag, given in (
        ("--list", args.list_file),
        ("--devices", args.devices),
        ("--attention-maps", args.attention_maps),
    ):
        if given:
            return fail(f"{flag} does not work with shard inputs yet; drop it (one process captions the shards)")
    output = Path(args.output)
    try:
        from captioner.runs.parquet_rows import require_pyarrow

        shards = expand_shards(args.inputs)
        if fmt == "parquet" or any(s.lower().endswith(".parquet") for s in shards):
            require_pyarrow()
        for shard in shards:
            if shard.lower().endswith(".parquet"):
                image_column(shard)  # a parquet without images is refused before any work
        check_apart([output], [*([args.model_dir] if Path(args.model_dir).is_dir() else []), *shards], "--output")
        check_writable(output, "--output", folder=True)
        outputs_of(shards, output, fmt)
        check_outputs(shards, output, args.resume, args.overwrite, fmt)
    except (DataError, ValueError, ImportError, FileExistsError) as err:
        return fail(err)
    try:
        model, tok = load_model(args, args.device)
        metadata = {
            "model": args.model_dir,
            "revision": args.revision,
            "runtime": args.runtime,
            "quantize": args.quantize,
            "precision": options.precision,
            "generation": dataclasses.asdict(gen),
        }
        run = caption_shards(
            model,
            tok,
            shards,
            output,
            generation=gen,
            options=options,
            retries=args.retries,
            overwrite=args.overwrite,
            metadata=metadata,
            output_format=fmt,
        )
    except ValueError as err:
        return fail(err)
    for shard, why in run.failed.items():
        print(f"captioner: shard {shard} failed: {why}", file=sys.stderr)
    print(
        f"shards: captioned {len(run.done)} ({run.rows} rows, {run.errors} errors), failed {len(run.failed)}, "
        f"skipped {len(run.skipped)} (already done) to {output}",
        file=sys.stderr,
    )
    return 1 if run.failed else 0
