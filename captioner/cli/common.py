"""What the subcommands share: the one-line user error, loading a package, the decoding flags, the data-source flags."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the commands import torch and the model only when they run, so that --help is quick
    from captioner.data.sources import DataSource
    from captioner.generate import GenerationConfig
    from captioner.model import Captioner
    from captioner.tokenizer import CaptionTokenizer


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error: `captioner: error: <command>: <what>`, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"captioner: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def fail(message: str) -> int:
    """A mistake the user can fix: one line on stderr, exit code 2."""
    print(f"captioner: error: {message}", file=sys.stderr)
    return 2


def positive(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the ValueError into its one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number >= 1")
    return value


def add_package_args(parser: argparse.ArgumentParser) -> None:
    """The model package a command uses: a folder or a Hub repo id, and the Hub revision."""
    from captioner.package import REQUIRED_FILES

    parser.add_argument("model_dir", metavar="MODEL",
                        help=f"model package: a folder ({', '.join(REQUIRED_FILES)}) or a Hub repo id (org/name; "
                        "downloaded once into the Hugging Face cache)")  # fmt: skip
    parser.add_argument("--revision", help="with a Hub repo id: its branch, tag or commit (default: main)")


def load_package(model_dir: str, device: str, revision: str | None = None) -> tuple[Captioner, CaptionTokenizer]:
    """A package folder or Hub repo id (captioner.hub), on `device`."""
    from captioner.inference import resolve_device
    from captioner.model import Captioner

    return Captioner.from_pretrained(model_dir, map_location=resolve_device(device), revision=revision)


def add_speed_args(parser: argparse.ArgumentParser) -> None:
    """Inference speed options shared by caption and evaluate (see `captioner.quantize`)."""
    g = parser.add_argument_group("speed")
    g.add_argument("--precision", default="32", choices=["32", "bf16", "16"],
                   help="autocast: bf16 (GPU, or a CPU with AVX512-BF16/AMX), 16 (GPU) or 32")  # fmt: skip
    g.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8: dynamic int8 linear layers (CPU; activations scaled per batch, so a caption can "
                   "change with the batch it is in)")  # fmt: skip


def apply_speed_args(model: Captioner, args: argparse.Namespace) -> None:
    """--quantize (in place) and the note on bf16 where this CPU lacks it; ValueError for a combination that
    cannot run."""
    from captioner.quantize import bf16_note, quantize_int8

    device = next(model.parameters()).device
    if args.quantize == "int8":
        if args.precision != "32":
            raise ValueError(f"--quantize int8 runs in fp32 around the int8 layers; drop --precision {args.precision}")
        quantize_int8(model)
    note = bf16_note(device) if args.precision == "bf16" else None
    if note:
        print(f"captioner: note: {note}", file=sys.stderr)


def option_type(name: str):  # an argparse type
    """argparse type for decoding option `name`: plain ASCII numbers (captioner.options), argparse's one line."""

    def parse(text: str):
        from captioner.options import PARSERS

        try:
            return PARSERS[name](text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """Decoding options shared by caption and evaluate (names as in Hugging Face `generate`)."""
    g = parser.add_argument_group("decoding")
    t = option_type
    g.add_argument("--num-beams", type=t("num_beams"), default=1, help="beam search with this many beams (1: greedy)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam")
    g.add_argument("--temperature", type=t("temperature"), default=1.0)
    g.add_argument("--top-k", type=t("top_k"), default=None)
    g.add_argument("--top-p", type=t("top_p"), default=None)
    g.add_argument("--seed", type=t("seed"), default=None, help="sampling seed, for reproducible samples")
    g.add_argument(
        "--num-return-sequences", type=t("num_return_sequences"), default=1, help="n-best captions per image"
    )
    g.add_argument("--length-penalty", type=t("length_penalty"), default=1.0)
    g.add_argument("--no-repeat-ngram-size", type=t("no_repeat_ngram_size"), default=0)
    g.add_argument("--repetition-penalty", type=t("repetition_penalty"), default=1.0)
    g.add_argument("--min-new-tokens", type=t("min_new_tokens"), default=0)
    g.add_argument("--max-new-tokens", type=t("max_new_tokens"), default=None,
                   help="token limit of a caption (default: what the model's block size allows)")  # fmt: skip
    g.add_argument("--early-stopping", action="store_true")


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The decoding flags (`add_generation_args`, named like the fields) as a validated GenerationConfig."""
    from captioner.generate import GenerationConfig

    cfg = GenerationConfig(**{f.name: getattr(args, f.name) for f in fields(GenerationConfig)})
    cfg.validate()
    return cfg


def add_source_args(parser: argparse.ArgumentParser, formats: list[str], default: str, split: str) -> None:
    """The flags of a `DataSource` (the same for evaluate and shards as the YAML keys of PairsDataModule)."""
    g = parser.add_argument_group("data")
    g.add_argument("--format", "--data-format", dest="format", default=default, choices=formats)
    g.add_argument("--data", "--input", dest="data", help="folder (imagefolder), table file, COCO annotation file, "
                   "or Karpathy split file")  # fmt: skip
    g.add_argument("--root", help="image folder (table: paths are relative to it; coco; karpathy)")
    g.add_argument("--image-column", default="file_name", help="table: the image path column")
    g.add_argument("--caption-column", default="text", help="table and imagefolder: the caption column")
    g.add_argument("--allow-outside-root", action="store_true", help="read image paths that resolve outside the root")
    g.add_argument("--split", default=split, help="Karpathy split(s), comma-separated (shapes: val, test or novel)")


def data_source(args: argparse.Namespace) -> DataSource:
    from captioner.data.sources import DataSource

    return DataSource(args.format, args.root, args.image_column, args.caption_column, args.allow_outside_root)
