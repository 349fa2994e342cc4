"""What the subcommands share: the one-line user error (the library's errors said with this command's flags), loading
a package, flags made from declared options (decoding, running over files, device), the data-source flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from captioner.errors import NamesArguments, as_flag
from captioner.options import DEVICE, Spec, specs

if TYPE_CHECKING:  # the commands import the model only when they run
    from captioner.data.sources import DataSource
    from captioner.decoding import CaptionModel
    from captioner.generate import GenerationConfig
    from captioner.model import Captioner
    from captioner.tokenizer import CaptionTokenizer


class Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error: `captioner: error: <command>: <what>`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"captioner: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def said(err: BaseException) -> str:
    """An error's message for the command line: a library error's arguments said as flags (`--device cpu`)."""
    return err.as_flags() if isinstance(err, NamesArguments) else str(err)


def fail(message: str | BaseException) -> int:
    """A mistake the user can fix: one line on stderr, exit code 2."""
    text = said(message) if isinstance(message, BaseException) else message
    print(f"captioner: error: {text}", file=sys.stderr)
    return 2


def positive(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the ValueError into its one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number >= 1")
    return value


def non_negative(text: str) -> int:
    """argparse type: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number >= 0")
    return value


def holdout_pairs(text: str) -> list[tuple[str, str]]:
    """`colour:shape,...` (the held-out shapes pairs) as (colour, shape) pairs."""
    return [(colour, shape) for colour, _, shape in (p.partition(":") for p in text.split(",") if p)]


def add_option(parser: argparse.ArgumentParser | Any, spec: Spec) -> None:  # or an argument group
    """The flag of a declared option: `--num-beams` for `num_beams`, its default, help and range; text parses as the
    option's type (plain ASCII numbers); the range is checked with the other options (`options_from`)."""
    option, flag = spec.option, as_flag(spec.name)
    if spec.kind is bool:
        action = argparse.BooleanOptionalAction if option.default else "store_true"
        parser.add_argument(flag, action=action, default=option.default, help=option.help)
        return

    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = spec.kind.__name__  # what argparse calls the type in its messages
    shown = "" if option.default is None else " (default: %(default)s)"
    parser.add_argument(
        flag, type=parse, default=option.default, choices=option.choices or None, help=spec.describe() + shown
    )


def add_options(parser: argparse.ArgumentParser, cls: type, title: str, names: list[str] | None = None) -> None:
    """A group of flags, one per option of dataclass `cls` (or of those `names`)."""
    group = parser.add_argument_group(title)
    for name, spec in specs(cls).items():
        if names is None or name in names:
            add_option(group, spec)


def options_from(args: argparse.Namespace, cls: type, **others: Any) -> Any:
    """The dataclass `cls` from its flags (`add_options`) and `others`, validated; ArgumentError naming the option."""
    obj = cls(**{name: getattr(args, name) for name in specs(cls)}, **others)
    obj.validate()
    return obj


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    add_option(parser, Spec.of("device", DEVICE))


def add_package_args(parser: argparse.ArgumentParser) -> None:
    """The model package a command uses: a folder or a Hub repo id, and the Hub revision."""
    from captioner.package import REQUIRED_FILES

    parser.add_argument(
        "model_dir",
        metavar="MODEL",
        help=f"model package: a folder ({', '.join(REQUIRED_FILES)}) or a Hub repo id (org/name; "
        "downloaded once into the Hugging Face cache)",
    )
    parser.add_argument("--revision", help="with a Hub repo id: its branch, tag or commit (default: main)")


def load_package(model_dir: str, device: str, revision: str | None = None) -> tuple[Captioner, CaptionTokenizer]:
    """A package folder or Hub repo id (captioner.hub), on `device`."""
    from captioner.device import resolve_device
    from captioner.model import Captioner

    return Captioner.from_pretrained(model_dir, map_location=resolve_device(device), revision=revision)


def add_speed_args(parser: argparse.ArgumentParser) -> None:
    """How the model runs, beside --precision and --device: --quantize (`captioner.quantize`) and --runtime."""
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="int8: dynamic int8 linear layers (CPU; activations scaled per batch, so a caption can "
        "change with the batch it is in); with --runtime onnx: the export's int8 graphs",
    )
    parser.add_argument(
        "--runtime",
        choices=["torch", "onnx"],
        default="torch",
        help="torch: MODEL is a model package, run by PyTorch; onnx: MODEL is a local folder `captioner "
        "export-onnx` wrote, run by ONNX Runtime on the CPU (the same decoding on its logits)",
    )


def load_model(
    args: argparse.Namespace, device: str, folder: Path | None = None
) -> tuple[CaptionModel, CaptionTokenizer]:
    """The model the flags ask for: the package `args.model_dir` on `device` (Hub id at --revision; `folder` where
    it was resolved already), --quantize applied, or the ONNX export there (--runtime onnx); ValueError for a
    combination that cannot run."""
    from captioner.export.onnx import is_export

    if args.runtime == "onnx":
        return load_onnx(args)
    if is_export(folder or args.model_dir):
        raise ValueError(f"{folder or args.model_dir} is an ONNX export (captioner export-onnx): pass --runtime onnx")
    model, tokenizer = load_package(str(folder or args.model_dir), device, None if folder else args.revision)
    apply_speed_args(model, args)
    return model, tokenizer


def load_onnx(args: argparse.Namespace) -> tuple[CaptionModel, CaptionTokenizer]:
    """--runtime onnx: the export folder on ONNX Runtime (CPU, fp32 or --quantize int8 graphs)."""
    from captioner.export.runtime import OnnxCaptioner

    return OnnxCaptioner.load(args.model_dir, quantized=args.quantize == "int8")


def check_runtime(args: argparse.Namespace) -> None:
    """What --runtime onnx needs: onnxruntime installed, and none of the flags it cannot run with (said before any
    process starts or file is read); ValueError saying which."""
    if args.runtime != "onnx":
        return
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("--runtime onnx needs ONNX Runtime: pip install -e '.[onnx]'") from None
    refused = {
        "--revision": args.revision is not None,
        f"--device {args.device}": args.device not in ("auto", "cpu"),
        f"--precision {args.precision}": args.precision != "32",
        "--devices": getattr(args, "devices", None) is not None,
        "--attention-maps": getattr(args, "attention_maps", None) is not None,
        "--attention": bool(getattr(args, "attention", False)),
    }
    for flag, bad in refused.items():
        if bad:
            raise ValueError(
                f"--runtime onnx runs an export folder in one process on the CPU, in fp32 or int8 graphs: drop {flag}"
            )


def apply_speed_args(model: Captioner, args: argparse.Namespace) -> None:
    """--quantize (in place) and the note on bf16 where this CPU lacks it; ValueError for a combination that
    cannot run."""
    from captioner.quantize import bf16_note, quantize_int8

    device = model.device
    if args.quantize == "int8":
        if args.precision != "32":
            raise ValueError(f"--quantize int8 runs in fp32 around the int8 layers; drop --precision {args.precision}")
        if device.type != "cpu":
            raise ValueError("--quantize int8 runs on the CPU (fbgemm kernels); on a GPU use --precision bf16")
        quantize_int8(model)
    note = bf16_note(device) if args.precision == "bf16" else None
    if note:
        print(
            f"captioner: note: --precision bf16: {note}; for speed on it use --precision 32, or --quantize int8",
            file=sys.stderr,
        )


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """The decoding flags: one per `GenerationConfig` field (names as in Hugging Face `generate`)."""
    from captioner.generate import GenerationConfig

    add_options(parser, GenerationConfig, "decoding")


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The decoding flags (`add_generation_args`) as a validated GenerationConfig; ArgumentError naming the option."""
    from captioner.generate import GenerationConfig

    return options_from(args, GenerationConfig)


def add_source_args(parser: argparse.ArgumentParser, formats: list[str], default: str, split: str) -> None:
    """The flags of a `DataSource` (the same for evaluate and shards as the YAML keys of PairsDataModule)."""
    g = parser.add_argument_group("data")
    g.add_argument("--format", "--data-format", dest="format", default=default, choices=formats)
    g.add_argument(
        "--data",
        "--input",
        dest="data",
        help="folder (imagefolder), table file, COCO annotation file, or Karpathy split file",
    )
    g.add_argument("--root", help="image folder (table: paths are relative to it; coco; karpathy)")
    g.add_argument("--image-column", default="file_name", help="table: the image path column")
    g.add_argument("--caption-column", default="text", help="table and imagefolder: the caption column")
    g.add_argument("--allow-outside-root", action="store_true", help="read image paths that resolve outside the root")
    g.add_argument("--split", default=split, help="Karpathy split(s), comma-separated (shapes: val, test or novel)")


def data_source(args: argparse.Namespace) -> DataSource:
    from captioner.data.sources import DataSource

    return DataSource(args.format, args.root, args.image_column, args.caption_column, args.allow_outside_root)
