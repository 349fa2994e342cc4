"""Training curves as PNGs from a run's metrics.csv, no server needed (`captioner plot RUN_DIR`)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from captioner.outputs import OutputError, atomic_file

# panel file name -> (title, y label, [(metric column, legend label)]); a panel is drawn when any column was logged
PANELS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "loss": ("Loss", "cross-entropy per token", [("train/loss", "train"), ("val/loss", "validation")]),
    "lr": ("Learning rate", "learning rate", [("lr", "lr")]),
    "quality": (
        "Caption quality (validation)",
        "score",
        [
            ("val/exact_match", "exact match"),
            ("val/attribute_accuracy", "attribute accuracy"),
            ("val/CIDEr-D", "CIDEr-D"),
            ("val/BLEU-4", "BLEU-4"),
        ],
    ),  # fmt: skip
    "throughput": ("Training throughput", "images per second", [("train/device/samples_per_sec", "images/s")]),
}


def read_metrics(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the run as (step, value) points: metrics.partN.csv (earlier parts of a resumed run) in
    order, then metrics.csv."""
    run_dir = Path(run_dir)
    parts = sorted(run_dir.glob("metrics.part*.csv"), key=lambda p: int(p.stem.removeprefix("metrics.part") or 0))
    files = [*parts, run_dir / "metrics.csv"]
    if not any(f.is_file() for f in files):
        raise OutputError(f"{run_dir}: no metrics.csv (give a run folder, e.g. runs/shapes/version_0)")
    series: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                for key, value in row.items():
                    if key in ("step", "epoch") or not value or not step:
                        continue
                    try:
                        series.setdefault(key, []).append((int(float(step)), float(value)))
                    except ValueError:
                        continue
    return series


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, overwrite: bool = False) -> list[Path]:
    """One PNG per panel that has data (loss, lr, quality, throughput) and `curves.png` with all of them, in
    `out_dir` (default `<run_dir>/plots`). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "plots"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} holds plots already; pass --overwrite to redraw them")
    panels = {name: spec for name, spec in PANELS.items() if any(series.get(k) for k, _ in spec[2])}
    if not panels:
        raise OutputError(f"{run_dir}: metrics.csv holds none of {sorted(k for p in PANELS.values() for k, _ in p[2])}")
    written = []
    for name, spec in panels.items():
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        _draw(ax, series, *spec)
        written.append(_save(fig, out / f"{name}.png"))
        plt.close(fig)
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), dpi=100, squeeze=False)
    for ax, spec in zip(axes.flat, panels.values(), strict=False):
        _draw(ax, series, *spec)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    resolved = Path(run_dir).resolve()
    fig.suptitle(f"{resolved.parent.name}/{resolved.name}")
    written.append(_save(fig, out / "curves.png"))
    plt.close(fig)
    return written


def _draw(ax, series, title: str, ylabel: str, columns: list[tuple[str, str]]) -> None:  # noqa: ANN001
    for key, label in columns:
        points = sorted(series.get(key, []))
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=label, marker="o" if len(points) < 20 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title == "Loss" and all(v > 0 for k, _ in columns for _, v in series.get(k, [])):
        ax.set_yscale("log")
    ax.legend(loc="best", fontsize=8)


def _save(fig, path: Path) -> Path:  # noqa: ANN001
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    with atomic_file(path, "wb") as f:
        f.write(buffer.getvalue())
    return path
