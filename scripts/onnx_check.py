"""`python scripts/onnx_check.py PACKAGE [--scenes 200]`: the shapes test scenes captioned by the package in
PyTorch and by its `captioner export-onnx` folder on ONNX Runtime (`--runtime onnx`), fp32 and int8, greedy and with
3 beams: how many captions equal PyTorch's, and each side's exact match.

PACKAGE is exported into a temporary folder (or pass --export, a folder `captioner export-onnx` wrote); the scenes
are the ones `captioner evaluate` scores (its held-out pairs from the package's training.json); every side runs the
project's own decoding (`captioner.shapes.evaluate.evaluate_shapes`). Prints one row per side and decoding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for a run from a checkout

from captioner.export.onnx import export_onnx  # noqa: E402
from captioner.export.runtime import OnnxCaptioner  # noqa: E402
from captioner.generate import GenerationConfig  # noqa: E402
from captioner.model import Captioner  # noqa: E402
from captioner.package import read_training  # noqa: E402
from captioner.shapes.evaluate import evaluate_shapes  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="a model package folder")
    parser.add_argument("--export", help="its export-onnx folder (default: exported into a temporary folder)")
    parser.add_argument("--scenes", type=int, default=200, help="shapes test scenes 0..N-1")
    parser.add_argument("--beams", type=int, default=3, help="the beam row's beams")
    args = parser.parse_args(argv)
    info = read_training(args.package)
    holdout = [tuple(p) for p in info.data.get("holdout_pairs", [])] if info else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.export) if args.export else export_onnx(args.package, Path(tmp) / "onnx")
        models = {"PyTorch fp32": Captioner.from_pretrained(args.package)}
        models["ONNX Runtime fp32"] = OnnxCaptioner.load(folder)
        models["ONNX Runtime int8"] = OnnxCaptioner.load(folder, quantized=True)
        print(f"{args.scenes} shapes test scenes, {args.package}")
        print("| side | decoding | exact match | captions equal to PyTorch fp32's |")
        print("|---|---|---:|---:|")
        failed = False
        for beams in (1, args.beams):
            decoding = "greedy" if beams == 1 else f"{beams} beams"
            config = GenerationConfig(num_beams=beams)
            rows = {}
            for name, (model, tokenizer) in models.items():
                metrics, records = evaluate_shapes(
                    model, tokenizer, "test", args.scenes, holdout, progress=False, generation=config
                )
                rows[name] = (metrics["exact_match"], [r["caption"] for r in records])
            reference = rows["PyTorch fp32"][1]
            for name, (exact, captions) in rows.items():
                equal = sum(a == b for a, b in zip(captions, reference, strict=True))
                print(f"| {name} | {decoding} | {100 * exact:.1f} % | {equal} / {len(reference)} |")
                failed |= name == "ONNX Runtime fp32" and equal != len(reference)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
