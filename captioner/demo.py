"""The demo: train on shapes with LightningCLI, then evaluate the exported package (what `make demo` runs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from captioner.callbacks import ExportModelPackage
from captioner.cli import trainer_cli
from captioner.evaluation import evaluate_shapes, write_jsonl
from captioner.model import Captioner


def run_demo(config: str, test_count: int = 500, overrides: list[str] | None = None) -> dict:
    start = time.time()
    cli = trainer_cli(["fit", "--config", config, *(overrides or [])])
    train_s = time.time() - start
    exporters = [c for c in cli.trainer.callbacks if isinstance(c, ExportModelPackage)]
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
    (run_dir / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
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
    print(f"total wall time {report['total_seconds']:.0f}s")
