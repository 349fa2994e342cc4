"""`python scripts/hf_pipeline_check.py PACKAGE [--scenes 200]`: how many of the shapes test scenes transformers'
own `pipeline("image-text-to-text")` captions as `captioner caption` does.

PACKAGE is exported with `captioner export-hf` into a temporary folder; the scenes are written as PNG files, which
both sides read: the pipeline (`pipe(images=files, text="")`) and `captioner.caption`, greedy (or both with
--num-beams). Prints the count of equal captions and the first few that differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for a run from a checkout

from captioner.generate import GenerationConfig  # noqa: E402
from captioner.hf.export import export_hf  # noqa: E402
from captioner.inference import caption  # noqa: E402
from captioner.shapes.scenes import make_scene  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="a model package folder (or Hub repo id)")
    parser.add_argument("--scenes", type=int, default=200, help="shapes test scenes 0..N-1")
    parser.add_argument("--batch-size", type=int, default=50, help="images per pipeline call")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search on both sides (1: greedy)")
    args = parser.parse_args(argv)
    from transformers import pipeline

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.scenes):
            files.append(str(Path(tmp) / f"test_{i:06d}.png"))
            make_scene("test", i).image.save(files[-1])
        folder = export_hf(args.package, Path(tmp) / "hf")
        start = time.perf_counter()
        ours = [c.text for c in caption(files, args.package, generation=GenerationConfig(num_beams=args.num_beams))]
        ours_s = time.perf_counter() - start
        pipe = pipeline("image-text-to-text", model=str(folder), trust_remote_code=True)
        start = time.perf_counter()
        theirs = []
        for at in range(0, len(files), args.batch_size):
            chunk = files[at : at + args.batch_size]
            results = pipe(images=chunk, text="", generate_kwargs={"num_beams": args.num_beams})
            theirs += [r["generated_text"] for r in results]
        theirs_s = time.perf_counter() - start
    equal = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"{equal} / {len(files)} pipeline captions equal captioner caption's ({len(set(ours))} distinct captions)")
    print(f"captioner.caption {ours_s:.1f} s, pipeline {theirs_s:.1f} s")
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    for i, a, b in differ[:5]:
        print(f"  scene {i}: captioner {a!r} / pipeline {b!r}")
    return 0 if equal == len(files) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
