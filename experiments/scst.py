"""Self-critical training experiment (configs/scst.yaml): what optimising CIDEr-D buys, at a wall-time budget.

1. Built-in shapes: from the demo package, SCST for `--minutes`; the shapes test and novel-pair splits scored
   before and after (exact match, attribute accuracy, CIDEr-D), and the reward and validation CIDEr-D against
   training time (a PNG).
2. A generated caption set whose references disagree the way people's do: shapes scenes, each with 5 captions
   drawn from many templates and synonyms ("a little red disc to the left of a big blue block"). The demo package
   is first fine-tuned on it with cross-entropy for `--base-minutes`; from there, the same wall time of SCST
   against the same wall time of more cross-entropy; validation CIDEr-D (pycocoevalcap) of each.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path

from captioner.generate import GenerationConfig
from captioner.inference import caption
from captioner.metrics import caption_metrics
from captioner.model import Captioner
from captioner.outputs import write_jsonl, write_text
from captioner.shapes import make_scene
from captioner.shapes.evaluate import evaluate_shapes
from captioner.train.cli import trainer_cli

SIZE = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
SHAPE = {
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "block"],
    "triangle": ["triangle"],
    "cross": ["cross", "plus sign"],
}
TEMPLATES = {
    1: ["{0}", "a picture of {0}", "there is {0}", "just {0} on a grey background", "{0} alone"],
    2: [
        "{0} and {1}",
        "{0} to the left of {1}",
        "on the left {0}, on the right {1}",
        "{0} next to {1}",
        "two shapes: {0} and {1}",
    ],
    3: [
        "{0}, {1} and {2}",
        "{0}, then {1}, then {2}",
        "three shapes: {0}, {1} and {2}",
        "from left to right {0}, {1} and {2}",
        "{0} beside {1} and {2}",
    ],
}


def varied_captions(objects: list, rng: random.Random, n: int = 5) -> list[str]:
    """n captions of one scene, each with its own template and words; objects named left to right."""
    out = []
    for _ in range(n):
        names = [f"a {rng.choice(SIZE[o.size])} {o.color} {rng.choice(SHAPE[o.shape])}" for o in objects]
        out.append(rng.choice(TEMPLATES[len(names)]).format(*names))
    return out


def write_varied_set(directory: Path, split: str, count: int) -> dict[str, list[str]]:
    """An imagefolder of `count` scenes with 5 varied captions each; returns file name -> references."""
    rng = random.Random(f"varied-{split}")
    (directory / "images").mkdir(parents=True)
    rows = []
    for index in range(count):
        scene = make_scene(split, index)
        name = f"images/{index:05d}.png"
        scene.image.save(directory / name)
        rows.append({"file_name": name, "text": varied_captions(scene.objects, rng)})
    write_jsonl(directory / "metadata.jsonl", rows)
    return {r["file_name"]: r["text"] for r in rows}


def fit(args: list[str]) -> tuple[Path, Path, float]:
    """`captioner fit` in this process: (exported package, log folder, wall seconds)."""
    start = time.perf_counter()
    cli = trainer_cli(["fit", *args])
    package = next(c for c in cli.trainer.callbacks if hasattr(c, "exported")).exported
    return Path(package), Path(cli.trainer.log_dir), time.perf_counter() - start


def shapes_scores(package: Path, count: int) -> dict[str, float]:
    model, tok = Captioner.from_pretrained(package)
    holdout = [tuple(p) for p in json.loads((package / "training.json").read_text())["data"]["holdout_pairs"]]
    out = {}
    for split in ("test", "novel"):
        metrics, _ = evaluate_shapes(
            model, tok, split, count, holdout, generation=GenerationConfig(), with_caption_metrics=True
        )
        out.update({f"{split}/{k}": round(metrics[k], 4) for k in ("exact_match", "attribute_accuracy", "CIDEr-D")})
    return out


def folder_cider(package: Path, folder: Path, references: dict[str, list[str]]) -> float:
    names = sorted(references)
    found = caption([folder / n for n in names], package)
    metrics = caption_metrics({n: c.text for n, c in zip(names, found, strict=True)}, references)
    return round(metrics["CIDEr-D"], 4)


def curve(log_dir: Path) -> list[dict[str, float]]:
    """(time, step, reward, val CIDEr-D) rows of a run's metrics.csv."""
    rows = list(csv.DictReader((log_dir / "metrics.csv").open()))
    out, last_time = [], 0.0
    for r in rows:
        last_time = float(r.get("train/time") or last_time)
        point = {"time_s": last_time, "step": int(r["step"])}
        if r.get("train/scst_reward"):
            point["reward"] = float(r["train/scst_reward"])
        if r.get("val/CIDEr-D"):
            point["val_CIDEr-D"] = float(r["val/CIDEr-D"])
        if len(point) > 2:
            out.append(point)
    return out


def plot_curve(points: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    reward = [p for p in points if "reward" in p]
    val = [p for p in points if "val_CIDEr-D" in p]
    ax.plot([p["time_s"] / 60 for p in reward], [p["reward"] for p in reward], label="sample reward (train)", lw=1)
    ax.plot([p["time_s"] / 60 for p in val], [p["val_CIDEr-D"] for p in val], "o-", label="greedy CIDEr-D (val)")
    ax.set_xlabel("training time (minutes, 2-core CPU)")
    ax.set_ylabel("CIDEr-D")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="scst_experiment_"))
    runs = f"--trainer.logger.init_args.save_dir={work / 'runs'}"

    def budget(minutes: float) -> list[str]:
        return [
            f"--trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
            "--trainer.max_steps=1000000",
        ]

    result: dict = {
        "minutes": args.minutes,
        "base_minutes": args.base_minutes,
        "lr": args.lr,
        "base": args.base,
        "overrides": args.overrides,
    }
    # 1. shapes, from the demo package
    base = Path(args.base)
    result["shapes_before"] = shapes_scores(base, args.count)
    lr = [f"--model.optimizer.lr={args.lr}"]
    package, log_dir, seconds = fit(
        [
            "--config",
            "configs/scst.yaml",
            f"--model.init_from={base}",
            runs,
            *lr,
            *budget(args.minutes),
            *args.overrides,
        ]
    )
    result["shapes_scst_seconds"] = round(seconds, 1)
    result["shapes_after"] = shapes_scores(package, args.count)
    result["shapes_curve"] = curve(log_dir)
    if args.plot:
        plot_curve(result["shapes_curve"], Path(args.plot))
    if args.shapes_only:
        return result
    # 2. varied references: cross-entropy base, then equal time of SCST or of more cross-entropy
    write_varied_set(work / "train", "train", args.train_images)
    refs = write_varied_set(work / "val", "val", args.val_images)
    data = [
        f"--data.init_args.train={work / 'train'}",
        f"--data.init_args.val={work / 'val'}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=32",
    ]
    finetune = ["--config", "configs/finetune.yaml", "--trainer.val_check_interval=200", runs, *data]
    extend = "--model.tokenizer.extend=64"  # new words ("disc", "beside"): tokens learned from the captions
    p1, _, s1 = fit([*finetune, f"--model.init_from={base}", extend, *budget(args.base_minutes)])
    scst_data = ["--config", str(work / "data.yaml")]
    write_text(
        work / "data.yaml",
        json.dumps(
            {
                "data": {
                    "class_path": "captioner.data.PairsDataModule",
                    "init_args": {
                        "format": "imagefolder",
                        "train": str(work / "train"),
                        "val": str(work / "val"),
                        "num_workers": 0,
                        "batch_size": 32,
                    },
                }
            }
        ),
    )
    p_scst, _, s_scst = fit(
        [
            "--config",
            "configs/scst.yaml",
            *scst_data,
            f"--model.init_from={p1}",
            runs,
            *lr,
            "--trainer.val_check_interval=100",
            *budget(args.minutes),
        ]
    )
    p_ce, _, s_ce = fit([*finetune, f"--model.init_from={p1}", *budget(args.minutes)])
    result["varied"] = {
        f"cross-entropy base ({s1:.0f} s)": folder_cider(p1, work / "val", refs),
        f"+ SCST ({s_scst:.0f} s)": folder_cider(p_scst, work / "val", refs),
        f"+ cross-entropy ({s_ce:.0f} s)": folder_cider(p_ce, work / "val", refs),
    }
    result["varied_samples"] = {name: refs[name] for name in sorted(refs)[:2]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/scst_experiment.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", default="runs/shapes/version_0/model", help="the demo package")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each SCST (and matching CE) run")
    parser.add_argument("--base-minutes", type=float, default=4.0, help="cross-entropy fine-tuning on the varied set")
    parser.add_argument("--lr", type=float, default=1e-5, help="SCST learning rate (configs/scst.yaml: 1e-5)")
    parser.add_argument("--shapes-only", action="store_true", help="run part 1 only")
    parser.add_argument("--count", type=int, default=500, help="shapes test and novel scenes scored")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--val-images", type=int, default=300)
    parser.add_argument("--plot", default=None, help="write the shapes reward / val CIDEr-D curve here (PNG)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument(
        "overrides", nargs="*", help="passed to the shapes SCST run, after --, e.g. -- --data.init_args.batch_size=64"
    )
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        write_text(args.output, text + "\n")
    return 0
