"""`python scripts/benchmark.py folder PACKAGE`: `captioner caption` end to end over a folder of shapes PNGs (start-up,
decoding the files, the model, writing JSONL), one process against `--devices N` and `--quantize int8`, the runs
alternating for --rounds rounds. Prints wall time, images/s, rows, unique paths, whether the rows are in input
order, and how many captions differ from the first variant's (fp32, one process)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from captioner.shapes import make_scene


def run(package: str, folder: Path, out: Path, options: list[str], batch: int, workers: int) -> float:
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "captioner", "caption", package, str(folder), "-o", str(out)]
    cmd += ["--batch-size", str(batch), "--workers", str(workers), *options]
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py folder", description=__doc__)
    parser.add_argument("package", help="a model package, e.g. runs/shapes/version_0/model")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    variants = ["", f"--devices {args.devices}", "--quantize int8", f"--quantize int8 --devices {args.devices}"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(args.images):
            make_scene("test", i).image.save(folder / f"{i:05d}.png")
        reference: dict[str, str] = {}
        print("| round | run | wall (s) | images/s | rows | unique | in input order | captions not as 1st |")
        print("|---:|---|---:|---:|---:|---:|---|---:|")
        for round_ in range(1, args.rounds + 1):
            for options in variants:
                out = Path(tmp) / "out.jsonl"
                seconds = run(args.package, folder, out, shlex.split(options), args.batch_size, args.workers)
                rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
                captions = {r["path"]: r.get("caption") for r in rows}
                reference = reference or captions
                differ = sum(captions.get(p) != c for p, c in reference.items())
                name = options or "fp32, 1 process"
                ordered = [r["path"] for r in rows] == sorted(str(p) for p in folder.iterdir())
                print(
                    f"| {round_} | {name} | {seconds:.1f} | {len(rows) / seconds:.0f} | {len(rows)} | "
                    f"{len(captions)} | {'yes' if ordered else 'no'} | {differ} |"
                )
    return 0
