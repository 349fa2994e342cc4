"""`captioner evaluate`: caption a data set split with a model package and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.cli.common import (
    Parser,
    add_device_arg,
    add_generation_args,
    add_options,
    add_package_args,
    add_source_args,
    add_speed_args,
    check_runtime,
    data_source,
    fail,
    generation_config,
    holdout_pairs,
    load_model,
    options_from,
    positive,
)
from captioner.data.sources import FORMATS, clean
from captioner.hub import resolve_package
from captioner.package import TRAINING_FILE, read_training

if TYPE_CHECKING:
    from captioner.decoding import CaptionModel
    from captioner.generate import GenerationConfig
    from captioner.runs.files import RunOptions
    from captioner.tokenizer import CaptionTokenizer


def evaluate_parser() -> argparse.ArgumentParser:
    from captioner.runs.files import RunOptions

    parser = Parser(
        prog="captioner evaluate",
        description="Caption a data set split and score it: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (pycocoevalcap; "
        "without Java a pure-Python tokenizer is used and METEOR skipped), plus exact match and attribute "
        "accuracy on the built-in shapes data.",
    )
    add_package_args(parser)
    add_source_args(parser, ["shapes", *FORMATS], default="shapes", split="test")
    parser.add_argument("--count", type=positive, default=500, help="shapes: number of scenes (default 500)")
    parser.add_argument("--holdout", help=f"shapes: held-out pairs colour:shape,...; default from {TRAINING_FILE}")
    parser.add_argument("--blind", action="store_true", help="shapes: image-blind control (swap image tokens)")
    parser.add_argument(
        "--attention", action="store_true", help="shapes: share of each shape word's cross-attention in its box"
    )
    parser.add_argument("--output", "-o", help="per-image predictions, JSON lines")
    parser.add_argument("--report", help="JSON report: metrics, model, data, decoding settings")
    parser.add_argument("--overwrite", action="store_true")
    add_device_arg(parser)
    add_options(parser, RunOptions, "running")
    add_speed_args(parser)
    add_generation_args(parser)
    return parser


def evaluate(argv: list[str]) -> int:
    args = evaluate_parser().parse_args(argv)
    from captioner.outputs import check_apart, check_writable
    from captioner.runs.files import RunOptions

    for option, out in (("--output", args.output), ("--report", args.report)):
        if out and Path(out).exists() and not args.overwrite:
            return fail(f"{out} exists; pass --overwrite to replace it")
        if out:
            check_writable(out, option)  # before the scoring, not after it
    try:
        check_runtime(args)
        gen = generation_config(args)
        options = options_from(args, RunOptions)
    except ValueError as err:
        return fail(err)
    from captioner.device import autocast

    try:
        # once: the model and training.json; an ONNX export is a folder (`load_model` says what a bad one lacks)
        args.folder = Path(args.model_dir) if args.runtime == "onnx" else resolve_package(args.model_dir, args.revision)
        reads = [args.folder, *(p for p in (args.data, args.root) if p)]
        for option, out in (("--output", args.output), ("--report", args.report)):
            if out:
                check_apart([out], reads, option)
        model, tok = load_model(args, args.device, args.folder)
        speed = autocast(model.device, options.precision)
    except ValueError as err:
        return fail(err)
    with speed:
        return _evaluate(args, model, tok, gen, options)


def _evaluate(
    args: argparse.Namespace, model: CaptionModel, tok: CaptionTokenizer, gen: GenerationConfig, options: RunOptions
) -> int:
    from dataclasses import asdict

    from captioner.evaluate import evaluate_pairs
    from captioner.outputs import write_jsonl, write_text
    from captioner.shapes.evaluate import evaluate_shapes

    if args.format == "shapes":
        holdout = _holdout(args.folder, args.holdout)
        if args.split == "novel" and not holdout:
            return fail("the novel split needs held-out pairs: train with data.holdout_pairs or pass --holdout")
        metrics, records = evaluate_shapes(
            model, tok, args.split, args.count, holdout, blind=args.blind, generation=gen, with_caption_metrics=True
        )
        data = {"format": "shapes", "split": args.split, "count": args.count, "blind": args.blind}
        if args.attention:
            from captioner.model import Captioner
            from captioner.shapes.attention import attention_in_boxes_by_layer

            assert isinstance(model, Captioner), "--attention needs the PyTorch model (refused with --runtime onnx)"

            layers = {"last_layer": -1, "mean_of_layers": None}
            found = attention_in_boxes_by_layer(model, tok, args.split, args.count, holdout, layers)
            metrics.update({f"attention_{name}_{k}": v for name, res in found.items() for k, v in res.items()})
    else:
        if not args.data:
            return fail(f"--format {args.format} needs --data PATH")
        try:
            pairs = clean(data_source(args).read(args.data, [args.split]), args.data)
        except ValueError as err:
            return fail(err)
        try:
            metrics, records = evaluate_pairs(model, tok, pairs, gen, options)
        except ValueError as err:  # e.g. no image could be captioned
            return fail(f"{args.data}: {err}")
        data = {"format": args.format, "path": args.data, "split": args.split, "count": len(pairs)}
    if args.output:
        write_jsonl(args.output, records, overwrite=args.overwrite)
    speed = {"precision": args.precision, "quantize": args.quantize, "runtime": args.runtime}
    report = {"metrics": metrics, "model": str(args.model_dir), "data": data, "decoding": asdict(gen), "speed": speed}
    if args.report:
        write_text(args.report, json.dumps(report, indent=2) + "\n")
    print(json.dumps({"split": args.split, "blind": args.blind, **metrics}))
    return 0


def _holdout(package: Path, given: str | None) -> list[tuple[str, str]]:
    if given is not None:
        return holdout_pairs(given)
    try:
        info = read_training(package)
    except ValueError as err:
        raise ValueError(f"{err}; pass --holdout") from err
    pairs = info.data.get("holdout_pairs", []) if info else []
    try:
        return [(str(c), str(s)) for c, s in pairs]
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{package / TRAINING_FILE}: holdout_pairs are not [colour, shape] pairs ({err}); pass --holdout"
        ) from err
