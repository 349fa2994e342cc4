"""Fine-tuning experiment: from a shapes model package, learn captions with words and phrasing shapes never had.

The new data: shapes scenes of one or two objects captioned "tiny crimson disc then big navy block" or
"solo: big lime wedge" (every word of size, colour and shape replaced, new templates).

Two runs with the same step budget, the same tokenizer (the package's) and the same architecture: one starts
from the package's weights (`configs/finetune.yaml`), one from random weights (`configs/pairs.yaml`). Prints
their validation losses and exact match (captions mapped back to the shapes words).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

from captioner.config import CaptionerConfig
from captioner.inference import caption
from captioner.model import Captioner
from captioner.outputs import write_jsonl
from captioner.shapes import ShapesDataModule, make_scene, score
from captioner.train.cli import trainer_cli

WORDS = {
    "small": "tiny", "large": "big", "red": "crimson", "green": "lime", "blue": "navy", "yellow": "golden",
    "purple": "violet", "orange": "amber", "circle": "disc", "square": "block", "triangle": "wedge", "cross": "plus",
}  # fmt: skip
BACK = {v: k for k, v in WORDS.items()}
COUNT = {1: "solo", 2: "pair"}
MAX_OBJECTS = 2  # new words cost ~5 BPE tokens each under the shapes tokenizer; 3 objects overflow block_size 40


def new_caption(objects: list, rng: random.Random) -> str:
    """Captions with new words and new templates, still left to right."""
    names = [" ".join(WORDS[w] for w in (o.size, o.color, o.shape)) for o in objects]
    if rng.random() < 0.5:
        return f"{COUNT[len(objects)]}: {' then '.join(names)}"
    return " | ".join(names)


def to_shapes_words(caption: str) -> str:
    """Map the new words back for the shapes scorer; the old words do not count (they are not the new captions)."""
    return " ".join(BACK.get(w, "?" if w in WORDS else w) for w in caption.replace(";", " ").replace(",", " ").split())


def write_set(directory: Path, split: str, count: int) -> list:
    rng = random.Random(split)
    (directory / "images").mkdir(parents=True)
    rows, scenes, index = [], [], 0
    while len(scenes) < count:
        scene, index = make_scene(split, index), index + 1
        if len(scene.objects) > MAX_OBJECTS:
            continue
        name = f"images/{len(scenes):05d}.png"
        scene.image.save(directory / name)
        rows.append({"file_name": name, "text": [new_caption(scene.objects, rng) for _ in range(3)]})
        scenes.append(scene)
    write_jsonl(directory / "metadata.jsonl", rows)
    return scenes


def with_used_tokens(base: Path, work: Path) -> Path:
    """A package trained before training.json listed its used tokens gets them computed the way the DataModule
    does at export (shapes packages only), in a copy."""
    info = json.loads((base / "training.json").read_text()) if (base / "training.json").is_file() else {}
    if info.get("used_token_ids") or info.get("data", {}).get("source") != "shapes":
        return base
    holdout = [tuple(p) for p in info["data"].get("holdout_pairs", [])]
    dm = ShapesDataModule(holdout_pairs=holdout, tokenizer_path=str(base / "tokenizer.json"))
    copy = work / "base_package"
    shutil.copytree(base, copy)
    (copy / "training.json").write_text(json.dumps({**info, "used_token_ids": dm.used_token_ids()}))
    return copy


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="finetune_experiment_"))
    base = with_used_tokens(Path(args.base), work)
    write_set(work / "train", "train", args.train_images)
    val_scenes = write_set(work / "val", "val", args.val_images)
    common = [
        f"--trainer.max_steps={args.steps}",
        f"--trainer.val_check_interval={args.steps}",
        f"--trainer.logger.init_args.save_dir={work / 'runs'}",
        f"--data.init_args.train={work / 'train'}",
        f"--data.init_args.val={work / 'val'}",
        f"--data.init_args.batch_size={args.batch_size}",
        "--data.init_args.num_workers=0",
        f"--model.lr={args.lr}",
    ]
    cfg = CaptionerConfig.load(base / "config.json")
    scratch_model = [
        f"--model.config.{k}={v if isinstance(v, str) else json.dumps(v)}"
        for k, v in cfg.to_dict().items()
        if k != "vocab_size"
    ]
    results = {}
    for name, cli_args in {
        "fine-tuned from the shapes package": [
            "--config", "configs/finetune.yaml", f"--model.init_from={base}", "--model.encoder_lr_mult=1.0"],
        "from scratch (same architecture and tokenizer)": [
            "--config", "configs/pairs.yaml", f"--data.init_args.tokenizer_path={base / 'tokenizer.json'}",
            *scratch_model],
    }.items():  # fmt: skip
        cli = trainer_cli(["fit", *cli_args, *common])
        package = next(c for c in cli.trainer.callbacks if hasattr(c, "exported")).exported
        model, tok = Captioner.from_pretrained(package)
        captions = [c.text for c in caption([s.image for s in val_scenes], model, tok)]
        shapes_metrics = score([to_shapes_words(c) for c in captions], [s.objects for s in val_scenes])
        results[name] = {
            "val_loss": round(float(cli.trainer.callback_metrics["val/loss"]), 4),
            "exact_match": shapes_metrics["exact_match"],
            "sample": captions[0],
        }
    return {"steps": args.steps, "batch_size": args.batch_size, "base": str(base), "runs": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/finetune_experiment.py", description=__doc__)
    parser.add_argument("--base", required=True, help="a shapes model package (make demo writes runs/shapes/*/model)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=200)
    report = run(parser.parse_args(argv))
    print(json.dumps(report, indent=2))
    for name, r in report["runs"].items():
        print(f"{name:<48} val loss {r['val_loss']:.3f}   exact match {r['exact_match']:.1%}   e.g. {r['sample']!r}")
    return 0
