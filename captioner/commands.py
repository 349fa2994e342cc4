"""The non-training subcommands of `captioner`: caption, evaluate, demo, shapes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _fail(message: str) -> int:
    print(f"captioner: error: {message}", file=sys.stderr)
    return 2


def _load(model_dir: str, device: str):  # noqa: ANN202
    from captioner.inference import resolve_device
    from captioner.model import Captioner

    return Captioner.from_pretrained(model_dir, map_location=resolve_device(device))


def _holdout(model_dir: str, given: str | None) -> list[tuple[str, str]]:
    if given is not None:
        return [tuple(p.split(":", 1)) for p in given.split(",") if p]  # type: ignore[misc]
    info = Path(model_dir) / "training.json"
    if info.is_file():
        return [tuple(p) for p in json.loads(info.read_text())["data"].get("holdout_pairs", [])]  # type: ignore[misc]
    return []


def caption(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="captioner caption",
        description="Caption images with a model package: files, folders (recursive), globs or a list file. "
        "Exit code 0 when every file was captioned, 1 when any failed (they get a row with an `error`).",
    )
    parser.add_argument("model_dir", help="model package folder (config.json, model.safetensors, tokenizer.json)")
    parser.add_argument("inputs", nargs="*", help="image files, folders (every file, recursively) or globs")
    parser.add_argument("--list", dest="list_file", help="a text file with one image path per line")
    parser.add_argument("--output", "-o", help="write rows here (.jsonl or .csv) as they come, instead of printing")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--resume", action="store_true", help="skip the images already in --output, append the rest")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding images")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    parser.add_argument("--attention-maps", metavar="DIR", help="write one cross-attention figure per image here")
    parser.add_argument(
        "--max-image-pixels", type=int, default=64_000_000, help="refuse larger images (decompression bombs)"
    )
    add_generation_args(parser)
    args = parser.parse_args(argv)
    from captioner.captioning import caption_files, expand_inputs

    try:
        gen = generation_config(args)
    except ValueError as err:
        return _fail(str(err))
    if not args.inputs and not args.list_file:
        return _fail("no inputs: give image files, folders, globs or --list FILE")
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in (".jsonl", ".csv"):
        return _fail(f"--output {output}: use a .jsonl or .csv file name")
    if output is not None and output.exists() and not (args.overwrite or args.resume):
        return _fail(f"{output} exists; pass --resume to continue it or --overwrite to replace it")
    paths = expand_inputs(args.inputs, args.list_file)
    if not paths:
        return _fail(f"no files found in {args.inputs}")
    model, tok = _load(args.model_dir, args.device)
    try:
        run = caption_files(
            model, tok, paths, output, gen, args.batch_size, args.workers, args.precision, args.resume,
            Path(args.attention_maps) if args.attention_maps else None, max_pixels=args.max_image_pixels,
        )  # fmt: skip
    except ValueError as err:
        return _fail(str(err))
    where = f" to {output}" if output else ""
    print(
        f"captioned {run.captioned}, failed {run.failed}, skipped {run.skipped} (already done){where}", file=sys.stderr
    )
    return 1 if run.failed else 0


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner evaluate",
        description="Caption a data set split and score it: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (pycocoevalcap; "
        "without Java a pure-Python tokenizer is used and METEOR skipped), plus exact match and attribute "
        "accuracy on the built-in shapes data.",
    )
    parser.add_argument("model_dir", help="model package folder")
    parser.add_argument(
        "--data-format", default="shapes", choices=["shapes", "imagefolder", "table", "coco", "karpathy"]
    )
    parser.add_argument("--data", help="folder / table / annotation or Karpathy file (not for shapes)")
    parser.add_argument("--root", help="image folder (table, coco, karpathy)")
    parser.add_argument("--image-column", default="file_name")
    parser.add_argument("--caption-column", default="text")
    parser.add_argument("--split", default="test", help="shapes: val, test or novel; karpathy: val or test")
    parser.add_argument("--count", type=int, default=500, help="shapes: number of scenes (default 500)")
    parser.add_argument("--holdout", help="shapes: held-out pairs colour:shape,...; default from training.json")
    parser.add_argument("--blind", action="store_true", help="shapes: image-blind control (swap image tokens)")
    parser.add_argument(
        "--attention", action="store_true", help="shapes: share of each shape word's cross-attention in its box"
    )
    parser.add_argument("--output", "-o", help="per-image predictions, JSON lines")
    parser.add_argument("--report", help="JSON report: metrics, model, data, decoding settings")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    add_generation_args(parser)
    return parser


def evaluate(argv: list[str]) -> int:
    args = _evaluate_parser().parse_args(argv)
    from dataclasses import asdict

    from captioner.evaluation import evaluate_pairs, evaluate_shapes, write_jsonl

    for out in (args.output, args.report):
        if out and Path(out).exists() and not args.overwrite:
            return _fail(f"{out} exists; pass --overwrite to replace it")
    gen = generation_config(args)
    model, tok = _load(args.model_dir, args.device)
    if args.data_format == "shapes":
        holdout = _holdout(args.model_dir, args.holdout)
        if args.split == "novel" and not holdout:
            return _fail("the novel split needs held-out pairs: train with data.holdout_pairs or pass --holdout")
        metrics, records = evaluate_shapes(
            model, tok, args.split, args.count, holdout, blind=args.blind, generation=gen, with_caption_metrics=True
        )
        data = {"format": "shapes", "split": args.split, "count": args.count, "blind": args.blind}
        if args.attention:
            from captioner.evaluation import attention_in_boxes_by_layer

            layers = {"last_layer": -1, "mean_of_layers": None}
            found = attention_in_boxes_by_layer(model, tok, args.split, args.count, holdout, layers)
            metrics.update({f"attention_{name}_{k}": v for name, res in found.items() for k, v in res.items()})
    else:
        if not args.data:
            return _fail(f"--data-format {args.data_format} needs --data PATH")
        try:
            pairs = _read_pairs(args)
        except ValueError as err:
            return _fail(str(err))
        metrics, records = evaluate_pairs(model, tok, pairs, gen, args.batch_size, args.workers)
        data = {"format": args.data_format, "path": args.data, "split": args.split, "count": len(pairs)}
    if args.output:
        write_jsonl(args.output, records, overwrite=args.overwrite)
    report = {"metrics": metrics, "model": str(args.model_dir), "data": data, "decoding": asdict(gen)}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"split": args.split, "blind": args.blind, **metrics}))
    return 0


def _read_pairs(args: argparse.Namespace) -> list:
    from captioner.data import pairs as P

    items = P.read_pairs(args.data_format, args.data, args.root, args.image_column, args.caption_column, [args.split])
    return P.clean(items, args.data)


def demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="captioner demo",
        description="Train on shapes from a config, then caption 500 held-out test scenes and score them.",
    )
    parser.add_argument("--config", default="configs/shapes.yaml")
    parser.add_argument("--test-count", type=int, default=500)
    parser.epilog = "Any other arguments go to `captioner fit`, e.g. --trainer.max_steps 100"
    args, extra = parser.parse_known_args(argv)
    if not Path(args.config).is_file():
        return _fail(f"config {args.config} not found; run from the repository root or pass --config")
    from captioner.demo import run_demo

    run_demo(args.config, args.test_count, extra)
    return 0


def shapes(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="captioner shapes", description="Write shapes scenes as an imagefolder (PNGs + metadata.jsonl)."
    )
    parser.add_argument("directory")
    parser.add_argument("--split", default="train", choices=["train", "val", "test", "novel"])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--holdout", default="", help="held-out pairs as colour:shape,...")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from captioner.data.shapes import write_imagefolder

    holdout = [tuple(p.split(":", 1)) for p in args.holdout.split(",") if p]
    try:
        start = time.time()
        write_imagefolder(args.directory, args.split, args.count, holdout, overwrite=args.overwrite)  # type: ignore[arg-type]
    except (FileExistsError, ValueError) as err:
        return _fail(str(err))
    print(f"wrote {args.count} {args.split} scenes to {args.directory} in {time.time() - start:.1f}s")
    return 0


def bench(argv: list[str]) -> int:
    from captioner.bench import main as bench_main

    return bench_main(argv)


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """Decoding options shared by caption and evaluate (names as in Hugging Face `generate`)."""
    g = parser.add_argument_group("decoding")
    g.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (1: greedy)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None, help="sampling seed, for reproducible samples")
    g.add_argument("--num-return-sequences", type=int, default=1, help="n-best captions per image")
    g.add_argument("--length-penalty", type=float, default=1.0)
    g.add_argument("--no-repeat-ngram-size", type=int, default=0)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--min-new-tokens", type=int, default=0)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--early-stopping", action="store_true")


def generation_config(args: argparse.Namespace):  # noqa: ANN201
    """The decoding flags (`add_generation_args`, named like the fields) as a validated GenerationConfig."""
    from dataclasses import fields

    from captioner.generate import GenerationConfig

    cfg = GenerationConfig(**{f.name: getattr(args, f.name) for f in fields(GenerationConfig)})
    cfg.validate()
    return cfg


def shards(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="captioner shards",
        description="Write webdataset tar shards (KEY.jpg|png|webp + KEY.txt + KEY.json) from any readable format.",
    )
    parser.add_argument("pattern", help="output shard pattern with a %%d field, e.g. shards/%%05d.tar")
    parser.add_argument("--format", default="imagefolder", choices=["imagefolder", "table", "coco", "karpathy"])
    parser.add_argument("--input", required=True, help="folder, table, COCO annotations or Karpathy file")
    parser.add_argument("--root", help="image folder (table/coco/karpathy)")
    parser.add_argument("--split", default="train", help="Karpathy split(s), comma-separated")
    parser.add_argument("--image-column", default="file_name")
    parser.add_argument("--caption-column", default="text")
    parser.add_argument("--max-count", type=int, default=10_000, help="samples per shard")
    parser.add_argument("--drop-missing", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    from captioner.data import pairs as P
    from captioner.data.shards import write_shards

    try:
        splits = args.split.split(",")
        items = P.read_pairs(args.format, args.input, args.root, args.image_column, args.caption_column, splits)
        items = P.clean(items, args.input, args.drop_missing)
        written = write_shards(items, args.pattern, args.max_count, args.overwrite)
    except (P.DataError, FileExistsError) as err:
        return _fail(str(err))
    print(f"wrote {len(items)} samples in {len(written)} shard(s): {written[0]} .. {written[-1]}")
    return 0


def prepare_coco(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
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
    from captioner.data import pairs as P

    root, problems = Path(args.root), []
    for split in ("train", "val"):
        ann = root / "annotations" / f"captions_{split}2017.json"
        if not ann.is_file():
            problems.append(f"missing {ann}")
            continue
        items = P.read_coco(ann, root / f"{split}2017")
        missing = [p.image for p in items if not Path(p.image).is_file()]
        captions = sum(len(p.captions) for p in items)
        print(f"{split}2017: {len(items):,} images, {captions:,} captions, {len(missing):,} image files missing")
        if missing:
            problems.append(f"{len(missing)} {split}2017 images missing, e.g. {missing[:3]}")
    if problems:
        return _fail("; ".join(problems))
    print(
        "\nuse in a config:\n  data:\n    class_path: captioner.data.PairsDataModule\n    init_args:\n"
        f"      format: coco\n      train: {root / 'annotations/captions_train2017.json'}"
    )
    return 0
