"""Data commands: `captioner shapes` (scenes to disk), `captioner shards` (webdataset shards from any format),
`captioner prepare-coco` (check a COCO folder)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from captioner.cli.common import Parser, add_source_args, data_source, fail, holdout_pairs, positive
from captioner.data.sources import FORMATS


def shapes(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner shapes", description="Write shapes scenes as an imagefolder (PNGs + metadata.jsonl)."
    )
    parser.add_argument("directory")
    parser.add_argument("--split", default="train", choices=["train", "val", "test", "novel"])
    parser.add_argument("--count", type=positive, default=100)
    parser.add_argument("--holdout", default="", help="held-out pairs as colour:shape,...")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from captioner.shapes.scenes import write_imagefolder

    holdout = holdout_pairs(args.holdout)
    try:
        start = time.time()
        write_imagefolder(args.directory, args.split, args.count, holdout, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        return fail(err)
    print(f"wrote {args.count} {args.split} scenes to {args.directory} in {time.time() - start:.1f}s")
    return 0


def shards(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner shards",
        description="Write webdataset tar shards (KEY.jpg|png|webp + KEY.txt + KEY.json) from any readable format.",
    )
    parser.add_argument("pattern", help="output shard pattern with a %%d field, e.g. shards/%%05d.tar")
    add_source_args(parser, list(FORMATS), default="imagefolder", split="train")
    parser.add_argument("--max-count", type=positive, default=10_000, help="samples per shard")
    parser.add_argument("--drop-missing", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from captioner.data.shard_writer import write_shards
    from captioner.data.sources import DataError, clean
    from captioner.outputs import OutputError

    if not args.data:
        return fail("--data (or --input) is required: the folder, table, COCO annotations or Karpathy file to read")
    try:
        items = clean(data_source(args).read(args.data, args.split.split(",")), args.data, args.drop_missing)
        written, skipped = write_shards(items, args.pattern, args.max_count, args.overwrite, inputs=[args.data])
    except (DataError, FileExistsError, OutputError) as err:
        return fail(err)
    if skipped:
        print(f"left out {len(skipped)} file(s) that do not decode as images, e.g. {skipped[:3]}", file=sys.stderr)
    if not written:
        return fail(f"no shard written: none of the {len(items)} files decodes as an image")
    print(f"wrote {len(items) - len(skipped)} samples in {len(written)} shard(s): {written[0]} .. {written[-1]}")
    return 0


def prepare_coco(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner prepare-coco",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Check a COCO captions folder and print the config lines that read it.

Expected layout (download from cocodataset.org; Karpathy splits from the `dataset_coco.json` of
Karpathy's neuraltalk2 release):
  ROOT/annotations/captions_train2017.json   ROOT/train2017/*.jpg
  ROOT/annotations/captions_val2017.json     ROOT/val2017/*.jpg
  ROOT/dataset_coco.json (optional)          ROOT/train2014/, ROOT/val2014/ (for the Karpathy split)
For example:
  wget http://images.cocodataset.org/zips/train2017.zip http://images.cocodataset.org/zips/val2017.zip
  wget http://images.cocodataset.org/annotations/annotations_trainval2017.zip
  unzip -q '*.zip' -d ROOT""",
    )
    parser.add_argument("root")
    args = parser.parse_args(argv)
    from captioner.data.sources import DataSource

    root, problems = Path(args.root), []
    for split in ("train", "val"):
        ann = root / "annotations" / f"captions_{split}2017.json"
        if not ann.is_file():
            problems.append(f"missing {ann}")
            continue
        items = DataSource("coco", str(root / f"{split}2017")).read(ann)
        missing = [p.image for p in items if not Path(p.image).is_file()]
        captions = sum(len(p.captions) for p in items)
        print(f"{split}2017: {len(items):,} images, {captions:,} captions, {len(missing):,} image files missing")
        if missing:
            problems.append(f"{len(missing)} {split}2017 images missing, e.g. {missing[:3]}")
    if problems:
        return fail("; ".join(problems))
    print(
        "\nuse in a config:\n  data:\n    class_path: captioner.data.PairsDataModule\n    init_args:\n"
        f"      format: coco\n      train: {root / 'annotations/captions_train2017.json'}"
    )
    return 0
