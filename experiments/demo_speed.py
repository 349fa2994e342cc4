"""The demo's speed, old config against new, side by side on this machine in one invocation.

Each config runs as `captioner demo --config CONFIG` in its own process (back to back, in `--order`), logging under
`--out/LABEL/`; the wall time is the whole process (start-up, training, export, the 500-scene test, the
image-blind control and the novel pairs). Printed: wall time, training time, steps, test exact match, attribute
accuracy, image-blind control and novel pairs for each, and the ratio of wall times. The summary is written to
`--out/demo_speed.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from captioner.outputs import write_text

CONFIGS = {"old": "experiments/shapes_previous.yaml", "new": "configs/shapes.yaml"}


def run(config: str, out: Path, extra: list[str]) -> dict:
    """One `captioner demo` in a subprocess: its demo_report.json plus the process's wall time."""
    command = [
        sys.executable,
        "-m",
        "captioner",
        "demo",
        "--config",
        config,
        f"--trainer.logger.init_args.save_dir={out}",
        *extra,
    ]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    reports = sorted(out.glob("*/version_*/demo_report.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        raise RuntimeError(f"`captioner demo --config {config}` wrote no demo_report.json under {out}")
    return {"config": config, "wall_seconds": round(wall, 1), **json.loads(reports[-1].read_text())}


def table(results: dict[str, dict]) -> str:
    head = "| config | wall | training | steps | test exact | test attribute | image-blind exact | novel exact |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in results.items():
        novel = f"{r['novel']['exact_match']:.1%}" if "novel" in r else "-"
        lines.append(
            f"| {label}: {r['config']} | {r['wall_seconds']:.0f} s | {r['train_seconds']:.0f} s | {r['steps']} | "
            f"{r['test']['exact_match']:.1%} | {r['test']['attribute_accuracy']:.1%} | "
            f"{r['blind_control']['exact_match']:.1%} | {novel} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/demo_speed.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", default=CONFIGS["old"], help="the config to beat (default: %(default)s)")
    parser.add_argument("--new", default=CONFIGS["new"], help="the new demo config (default: %(default)s)")
    parser.add_argument("--order", default="old,new", choices=["old,new", "new,old"], help="which runs first")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/demo_speed/DATE-TIME; must not exist)")
    parser.add_argument("--test-count", type=int, default=500, help="test scenes scored per demo")
    parser.add_argument(
        "extra",
        nargs="*",
        help="passed to both `captioner demo` runs, after --, e.g. -- --trainer.max_steps=20 for a quick check",
    )
    args = parser.parse_args(argv)
    out = args.out or Path("runs/demo_speed") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if out.exists():
        parser.error(f"--out {out} exists; pass a new folder (the runs of an earlier comparison are kept)")
    for label in ("old", "new"):
        if not Path(getattr(args, label)).is_file():
            parser.error(f"--{label} {getattr(args, label)} not found; run from the repository root")
    extra = ["--test-count", str(args.test_count), *args.extra]
    try:
        results = {label: run(getattr(args, label), out / label, extra) for label in args.order.split(",")}
    except subprocess.CalledProcessError as err:  # the demo said why above; one line here, no traceback
        print(
            f"demo_speed: error: `captioner demo --config {err.cmd[5]}` exited with {err.returncode} (its message is "
            "above); nothing was compared",
            file=sys.stderr,
        )
        return 2
    results = {"old": results["old"], "new": results["new"]}
    ratio = results["old"]["wall_seconds"] / results["new"]["wall_seconds"]
    summary = {
        "machine": machine(),
        "date": datetime.now().isoformat(timespec="seconds"),
        "order": args.order,
        "old_over_new_wall": round(ratio, 2),
        **results,
    }
    write_text(out / "demo_speed.json", json.dumps(summary, indent=2) + "\n")
    print("\n" + table(results))
    print(f"\nwall time old / new: {ratio:.2f}x   (summary: {out / 'demo_speed.json'})")
    return 0


def machine() -> str:
    """The CPU's model name and core count (what the times depend on)."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "unknown")
    return f"{name}, {os.cpu_count()} cores"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
