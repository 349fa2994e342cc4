"""Benchmarks that print numbers: `python scripts/benchmark.py decode|caption|folder|data|train|epoch|serve|recaption
...`.

decode: a training step, greedy and beam decoding against Hugging Face VisionEncoderDecoder; caption: images/s
of the captioning path with the CPU options (int8, bf16) against Hugging Face fp32; folder: `captioner caption`
end to end on one process vs --devices N and int8; data: images/s of the
data pipeline; train: images/s, tokens/s, memory and MFU of training steps; epoch: frozen-encoder epochs online
vs from the feature cache; serve: `captioner serve` under load, dynamic batching vs batch size 1; recaption: the
local shard runner over webdataset shards, and its read/decode and model parts alone.
`python scripts/benchmark.py NAME --help` lists each one's options.
"""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks/ lives there

NAMES = ("decode", "caption", "folder", "data", "train", "epoch", "serve", "recaption")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in NAMES:
        print(__doc__, file=sys.stderr)
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
    sys.exit(importlib.import_module(f"benchmarks.{sys.argv[1]}").main(sys.argv[2:]))
