"""`captioner export-hf` and `export-onnx`: a transformers folder (captioner.hf); ONNX (captioner.export)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captioner.cli.common import Parser, add_package_args, fail


def run_export(
    argv: list[str],
    prog: str,
    description: str,
    export: Callable[..., Path],
    wrote: Callable[[Path], str],
    options: Callable[[Parser], Callable[[argparse.Namespace], dict[str, Any]]] | None = None,
) -> int:
    """Parse PACKAGE OUT [--overwrite] (and the flags `options` adds, which returns the keyword arguments of
    `export` they give), refuse an existing OUT without --overwrite in one line, run
    `export(package folder, out, overwrite, **keywords)` and say `wrote(out)` on stderr."""
    parser = Parser(prog=prog, description=description)
    add_package_args(parser)
    parser.add_argument("out", help="the folder to write (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    keywords = options(parser) if options is not None else lambda args: {}
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        return fail(f"{out} exists; pass --overwrite to replace it, or choose another folder")
    from captioner.hub import resolve_package

    export(resolve_package(args.model_dir, args.revision), out, args.overwrite, **keywords(args))
    print(f"wrote {out}: {wrote(out)}", file=sys.stderr)
    return 0


def export_hf(argv: list[str]) -> int:
    from captioner.hf.export import export_hf as export

    return run_export(
        argv,
        "captioner export-hf",
        "Write a folder that transformers loads with AutoModelForImageTextToText, AutoTokenizer and "
        "AutoImageProcessor (trust_remote_code=True: the configuration and modeling code come with it and do not "
        "import captioner); its generate() gives the captions `captioner caption` gives, greedy and beam.",
        export,
        lambda out: f"AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True)",
    )


def web_options(parser: Parser) -> Callable[[argparse.Namespace], dict[str, Any]]:
    """export-onnx's --web and --onnxruntime-web."""
    from captioner.export.web import ORT_WEB_VERSION, cache_folder

    parser.add_argument(
        "--web",
        action="store_true",
        help="also write OUT/web/: a static page that captions in the browser with onnxruntime-web (serve OUT with "
        "`captioner serve --static OUT`, open /web/)",
    )
    parser.add_argument(
        "--onnxruntime-web",
        metavar="DIR",
        help="onnxruntime-web's dist folder (node_modules/onnxruntime-web/dist) to copy its wasm backend from; "
        f"implies --web (default: `npm install onnxruntime-web@{ORT_WEB_VERSION}` once into {cache_folder()})",
    )
    return lambda args: {"web": args.web or args.onnxruntime_web is not None, "onnxruntime_web": args.onnxruntime_web}


def export_onnx(argv: list[str]) -> int:
    from captioner.export.onnx import export_onnx as export
    from captioner.export.web import RuntimeFilesMissing

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter writes with it)
    except ImportError as err:
        return fail(f"export-onnx needs the onnx extra ({err.name} is missing): pip install -e '.[onnx]'")

    try:
        return run_export(
            argv,
            "captioner export-onnx",
            "Write the model as ONNX for ONNX Runtime and transformers.js: onnx/encoder_model.onnx (image -> memory "
            "and every cross-attention layer's keys/values) and onnx/decoder_model_merged.onnx (one graph for the "
            "first step and the steps with past keys/values), with config.json, tokenizer.json, "
            "generation_config.json and preprocessor_config.json beside them; with --web, a page that captions in "
            "the browser.",
            export,
            lambda out: (
                "onnx/encoder_model.onnx and onnx/decoder_model_merged.onnx"
                + (", web/index.html" if (out / "web").is_dir() else "")
            ),
            web_options,
        )
    except RuntimeFilesMissing as err:
        return fail(f"--web needs onnxruntime-web's files: {err}; install npm, or pass --onnxruntime-web DIR")
