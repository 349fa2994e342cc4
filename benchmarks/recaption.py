"""`python scripts/benchmark.py recaption PACKAGE`: images/s of recaptioning webdataset shards with the local shard
runner (`captioner caption SHARDS --output DIR`, `captioner.runs.shards`), and of its two parts alone: reading +
JPEG decoding + the model's preprocessing (`shard_items` and the runner's decode, no model), and the model on
batches already preprocessed (encoder + greedy decoding, `caption_batch`). The slower part bounds the runner;
their costs per image are what the estimate for a large dataset multiplies (docs/SCALING.md).

--images shapes test scenes (640 x 480 JPEGs, as a web dataset's photos are larger than the model's input) are
written into --shards webdataset shards in a temporary folder; each row is timed --repeats times, the rows
alternating, after one warm-up run; the median and the spread (min-max) are printed. Ray Data's engine
(`--engine ray`) is not built yet: its row comes with it.
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import timed_all
from captioner.data.shard_items import shard_items
from captioner.inference import caption_batch
from captioner.model import Captioner
from captioner.runs.files import RunOptions
from captioner.runs.shards import caption_shards, decode_item
from captioner.shapes.scenes import make_scene


def write_shards(folder: Path, images: int, shards: int) -> list[str]:
    """`images` scenes as 640 x 480 JPEGs (KEY.jpg + KEY.txt) in `shards` webdataset shards under `folder`."""
    import webdataset as wds

    paths = [str(folder / f"{s:05d}.tar") for s in range(shards)]
    for s, path in enumerate(paths):
        with wds.TarWriter(path) as sink:
            for i in range(s, images, shards):
                scene = make_scene("test", i)
                data = io.BytesIO()
                scene.image.resize((640, 480)).save(data, format="JPEG", quality=90)
                sink.write({"__key__": f"{i:09d}", "jpg": data.getvalue(), "txt": scene.captions[0]})
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/benchmark.py recaption",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", help="a model package folder (e.g. the demo's runs/shapes/version_0/model)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    model, tokenizer = Captioner.from_pretrained(args.package)
    transform = model.preprocessing.eval_transform()
    options = RunOptions(batch_size=args.batch_size, progress=False)
    tmp = Path(tempfile.mkdtemp(prefix="recaption-bench-"))
    try:
        shards = write_shards(tmp, args.images, args.shards)
        batches: list[torch.Tensor] = []

        def read_and_decode() -> None:
            batches.clear()
            for shard in shards:
                pixels = [decode_item(it, transform, options.max_image_pixels)["image"] for it in shard_items(shard)]
                batches.extend(
                    torch.stack(pixels[i : i + args.batch_size]) for i in range(0, len(pixels), args.batch_size)
                )

        def model_only() -> None:
            with torch.inference_mode():
                for batch in batches:
                    caption_batch(model, tokenizer, batch)

        def runner() -> None:
            out = tmp / "out"
            shutil.rmtree(out, ignore_errors=True)
            run = caption_shards(model, tokenizer, shards, out, options=options)
            assert len(run.done) == len(shards) and run.rows == args.images, run

        read_and_decode()  # the batches the model-only row captions
        rows: dict[str, Callable[[], object]] = {
            "local shard runner, end to end": runner,
            "read + JPEG decode + preprocess only": read_and_decode,
            "model only (encoder + greedy), batches given": model_only,
        }
        times = dict(zip(rows, timed_all(list(rows.values()), args.repeats, warmup=1), strict=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {platform.machine()}; {args.package}; "
        f"{args.images} 640x480 JPEGs in {args.shards} shards, batch {args.batch_size}, greedy; median of "
        f"{args.repeats} (min-max)"
    )
    print(f"\n| {'row':<46} | images/s (min-max)   | ms per image |")
    print(f"|{'-' * 48}|---------------------:|-------------:|")
    for name, t in times.items():
        rate = [args.images / s for s in t.times]
        shown = f"{args.images / t.median:.1f} ({min(rate):.1f}-{max(rate):.1f})"
        print(f"| {name:<46} | {shown:>20} | {1000 * t.median / args.images:12.2f} |")
    return 0
