"""`captioner export-hf PACKAGE OUT`: a folder transformers loads with its Auto classes (see captioner.hf)."""

from __future__ import annotations

import sys
from pathlib import Path

from captioner.cli.common import Parser, add_package_args, fail


def export_hf(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner export-hf",
        description="Write a folder that transformers loads with AutoModelForImageTextToText, AutoTokenizer and "
        "AutoImageProcessor (trust_remote_code=True: the configuration and modeling code come with it and do not "
        "import captioner); its generate() gives the captions `captioner caption` gives, greedy and beam.",
    )
    add_package_args(parser)
    parser.add_argument("out", help="the folder to write (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        return fail(f"{out} exists; pass --overwrite to replace it, or choose another folder")
    from captioner.hf.export import export_hf as export
    from captioner.hub import resolve_package

    export(resolve_package(args.model_dir, args.revision), out, overwrite=args.overwrite)
    print(
        f"wrote {out}: AutoModelForImageTextToText.from_pretrained({str(out)!r}, trust_remote_code=True)",
        file=sys.stderr,
    )
    return 0
