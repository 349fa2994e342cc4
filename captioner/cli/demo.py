"""`captioner demo`: train on shapes with LightningCLI, then evaluate the exported package (what `make demo` runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from captioner.cli.common import Parser, fail
from captioner.model import Captioner
from captioner.outputs import write_jsonl, write_text
from captioner.plots import plot_run
from captioner.shapes.evaluate import evaluate_shapes
from captioner.train.callbacks import ExportModelPackage, callbacks_of
from captioner.train.cli import trainer_cli


def run_demo(config: str, test_count: int = 500, overrides: list[str] | None = None) -> dict:
    start = time.time()
    cli = trainer_cli(["fit", "--config", config, *(overrides or [])])
    train_s = time.time() - start
    exporters = [c for c in callbacks_of(cli.trainer) if isinstance(c, ExportModelPackage)]
    if not exporters or exporters[0].exported is None:
        raise RuntimeError(f"{config} has no ExportModelPackage callback; the demo needs the exported package")
    package = exporters[0].exported
    run_dir = package.parent
    model, tok = Captioner.from_pretrained(package)
    holdout = cli.datamodule.holdout
    report: dict = {"package": str(package), "train_seconds": round(train_s, 1), "steps": cli.trainer.global_step}
    report["test"], records = evaluate_shapes(model, tok, "test", test_count, holdout)
    write_jsonl(run_dir / "predictions.jsonl", records)
    report["blind_control"], _ = evaluate_shapes(model, tok, "test", test_count, holdout, blind=True)
    if holdout:
        report["novel"], novel = evaluate_shapes(model, tok, "novel", 200, holdout)
        write_jsonl(run_dir / "predictions_novel.jsonl", novel)
    report["total_seconds"] = round(time.time() - start, 1)
    write_text(run_dir / "demo_report.json", json.dumps(report, indent=2) + "\n")
    report["plots"] = [str(p) for p in plot_run(run_dir)]
    _print(report, run_dir)
    return report


def _line(name: str, m: dict) -> str:
    return f"{name:<34} exact match {m['exact_match']:6.1%}   attribute accuracy {m['attribute_accuracy']:6.1%}"


def _print(report: dict, run_dir: Path) -> None:
    print("\n=== captioner shapes demo ===")
    print(f"trained {report['steps']} steps in {report['train_seconds']:.0f}s; model package: {report['package']}")
    print(_line(f"test ({report['test']['count']} scenes):", report["test"]))
    print(_line("image-blind control:", report["blind_control"]))
    if "novel" in report:
        print(_line(f"novel colour-shape pairs ({report['novel']['count']}):", report["novel"]))
    print(f"predictions: {run_dir / 'predictions.jsonl'}; report: {run_dir / 'demo_report.json'}")
    print(f"training curves: {', '.join(report['plots'])}; TensorBoard: tensorboard --logdir {run_dir.parent}")
    print(f"total wall time {report['total_seconds']:.0f}s")


def demo(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner demo",
        description="Train on shapes from a config, then caption 500 held-out test scenes and score them.",
    )
    parser.add_argument("--config", default="configs/shapes.yaml")
    parser.add_argument("--test-count", type=int, default=500)
    parser.epilog = "Any other arguments go to `captioner fit`, e.g. --trainer.max_steps 100"
    args, extra = parser.parse_known_args(argv)
    if not Path(args.config).is_file():
        return fail(f"config {args.config} not found; run from the repository root or pass --config")
    run_demo(args.config, args.test_count, extra)
    return 0
