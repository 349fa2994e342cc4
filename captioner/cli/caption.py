"""`captioner caption`: caption image files with a model package, streaming rows to JSONL/CSV."""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from captioner.cli.caption_shards import OUTPUT_FORMATS, caption_shards_command, is_shard_job
from captioner.cli.common import (
    Parser,
    add_device_arg,
    add_generation_args,
    add_options,
    add_package_args,
    add_speed_args,
    check_runtime,
    fail,
    generation_config,
    load_model,
    non_negative,
    options_from,
    positive,
)


def caption_parser() -> argparse.ArgumentParser:
    from captioner.runs.files import RunOptions

    parser = Parser(
        prog="captioner caption",
        description="Caption images with a model package: files, folders (recursive), globs or a list file; or "
        "recaption shards (webdataset .tar, parquet) into one parquet file per shard in an --output folder. "
        "Exit code 0 when every file (shard) was captioned, 1 when any failed (a file gets a row with an `error`).",
    )
    add_package_args(parser)
    parser.add_argument("inputs", nargs="*", help="image files, folders (every file, recursively) or globs")
    parser.add_argument("--list", dest="list_file", help="a text file with one image path per line")
    parser.add_argument(
        "--output",
        "-o",
        help="write rows here (.jsonl or .csv) as they come, instead of printing; with shard inputs (.tar, .parquet, "
        "brace patterns like 'shards/{00000..00007}.tar'), a folder that gets one parquet file per shard",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the images already in --output, append the rest (shards: skip the shards already done)",
    )
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default=None,
        help="shards: the format of the output shards: parquet (the default), or webdataset (the input's samples "
        "with the caption as their .txt member)",
    )
    parser.add_argument(
        "--retries",
        type=non_negative,
        default=2,
        help="shards: try a shard that fails to read this many more times before reporting it (default: 2)",
    )
    add_device_arg(parser)
    parser.add_argument(
        "--devices",
        type=positive,
        default=None,
        help="caption on this many processes (GPUs, or CPU processes sharing the cores), one merged "
        "output in input order; under torchrun or SLURM the launcher's count is used",
    )
    parser.add_argument("--num-nodes", type=positive, default=None, help="machines taking part (with --devices)")
    parser.add_argument("--attention-maps", metavar="DIR", help="write one cross-attention figure per image here")
    add_options(parser, RunOptions, "running")
    add_speed_args(parser)
    add_generation_args(parser)
    return parser


def caption(argv: list[str]) -> int:
    args = caption_parser().parse_args(argv)
    from captioner.device import resolve_device
    from captioner.runs.files import RunOptions, caption_files
    from captioner.runs.ranks import launch

    try:
        check_runtime(args)
        gen = generation_config(args)
        attention = Path(args.attention_maps) if args.attention_maps else None
        options = options_from(args, RunOptions, resume=args.resume, attention_dir=attention)
    except ValueError as err:
        return fail(err)
    if is_shard_job(args):
        return caption_shards_command(args, gen, options)
    if not args.inputs and not args.list_file:
        return fail("no inputs: give image files, folders, globs or --list FILE")
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in (".jsonl", ".csv"):
        return fail(f"--output {output}: use a .jsonl or .csv file name")
    if output is not None and output.exists() and not (args.overwrite or args.resume):
        return fail(f"{output} exists; pass --resume to continue it or --overwrite to replace it")
    paths = expand_inputs(args.inputs, args.list_file)
    if not paths:
        return fail(f"no files found in {args.inputs}")
    from captioner.outputs import check_apart, check_writable

    package = [args.model_dir] if Path(args.model_dir).is_dir() else []
    listed = [args.list_file] if args.list_file else []
    reads = [*package, *(i for i in args.inputs if Path(i).is_dir()), *listed, *paths]
    for option, out in (("--output", output), ("--attention-maps", args.attention_maps)):
        if out is not None:  # an output among the inputs would destroy one, or be read as input next time
            check_apart([out], reads, option)
    if output is not None:
        check_writable(output, "--output")
    if args.attention_maps:
        check_writable(args.attention_maps, "--attention-maps", folder=True)
    try:
        ranks = launch(args.devices, args.num_nodes, resolve_device(args.device).type)
    except ValueError as err:  # e.g. --devices that do not match torchrun's or SLURM's process count
        return fail(err)
    try:
        model, tok = load_model(args, str(ranks.device or args.device))
        run = caption_files(model, tok, paths, output=output, generation=gen, options=options, ranks=ranks)
    except ValueError as err:
        return fail(err)
    finally:
        ranks.close()
    if ranks.rank != 0:
        return 0  # rank 0 says how it went, and exits with the status (see captioner.runs.ranks)
    where = f" to {output}" if output else ""
    cut = f" ({run.truncated} cut by the token limit)" if run.truncated else ""
    print(
        f"captioned {run.captioned}{cut}, failed {run.failed}, skipped {run.skipped} (already done){where}",
        file=sys.stderr,
    )
    return 1 if run.failed else 0


def expand_inputs(items: list[str], list_file: str | None = None) -> list[str]:
    """Files, folders (every non-hidden entry that is not a folder, recursively: non-images, FIFOs and devices
    get an error row), globs, a list file."""
    out: list[str] = []
    if list_file:
        if not Path(list_file).is_file():
            raise FileNotFoundError(f"--list {list_file}: no such file (give a text file with one image path per line)")
        out.extend(line.strip() for line in Path(list_file).read_text(encoding="utf-8").splitlines() if line.strip())
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = (p for p in path.rglob("*") if not p.is_dir())  # FIFOs, devices, broken links: error rows
            out.extend(str(p) for p in sorted(files) if not any(part.startswith(".") for part in p.parts[-1:]))
        elif any(ch in item for ch in "*?[") and not path.exists():
            out.extend(sorted(glob.glob(item, recursive=True)))
        else:
            out.append(item)
    return out
