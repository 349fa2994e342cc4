"""Training curves as PNGs from a run's metrics.csv, no server needed (`captioner plot RUN_DIR`)."""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioner.outputs import OutputError, atomic_file

log = logging.getLogger(__name__)

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
    ),
    "throughput": ("Training throughput", "images per second", [("train/device/samples_per_sec", "images/s")]),
}


# per curve: a longer run is thinned as it is read (every 2nd, 4th, ... point), so memory stays bounded
MAX_POINTS = 4096


class Curve:
    """(step, value) points of one metric, read one at a time and thinned to at most 2 x MAX_POINTS."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self.stride, self.seen = 1, 0

    def add(self, step: float, value: float) -> None:
        if self.seen % self.stride == 0:
            self.points.append((step, value))
            if len(self.points) > 2 * MAX_POINTS:
                self.points, self.stride = self.points[::2], self.stride * 2
        self.seen += 1


@dataclass
class Metrics:
    """What `read_metrics` found: the plotted metrics' curves and what it had to leave out."""

    curves: dict[str, list[tuple[float, float]]]
    nonfinite: int = 0  # values (or steps) that are NaN or infinite
    unreadable: int = 0  # values (or steps) that are not numbers
    columns: list[str] = field(default_factory=list)  # every column of the files


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def read_metrics(run_dir: str | Path) -> Metrics:
    """The plotted metrics of a run (PANELS' columns) as (step, value) points: metrics.partN.csv (earlier parts of a
    resumed run) in order, then metrics.csv, read row by row in bounded memory. Steps and values that are not finite
    numbers are left out and counted; a file that is not CSV text is an OutputError naming it and the line."""
    run_dir = Path(run_dir)
    parts = sorted(run_dir.glob("metrics.part*.csv"), key=lambda p: _part_number(p.stem))
    files = [p for p in (*parts, run_dir / "metrics.csv") if p.is_file()]
    if not files:
        raise OutputError(f"{run_dir}: no metrics.csv (give a run folder, e.g. runs/shapes/version_0)")
    wanted = {k for _, _, cols in PANELS.values() for k, _ in cols}
    curves = {k: Curve() for k in wanted}
    found = Metrics({})
    for path in files:
        reader = None
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                found.columns = list(dict.fromkeys([*found.columns, *(reader.fieldnames or [])]))
                for row in reader:
                    _add_row(row, wanted, curves, found)
        except (UnicodeDecodeError, csv.Error) as err:
            line = f" line {reader.line_num}" if reader is not None else ""
            raise OutputError(f"{path}{line}: not a metrics CSV ({err}); it was not written by the CSV logger") from err
    found.curves = {k: c.points for k, c in curves.items() if c.points}
    return found


def _add_row(row: dict[str, Any], wanted: set[str], curves: dict[str, Curve], found: Metrics) -> None:
    values = {k: row.get(k) for k in wanted if row.get(k)}
    if not values:
        return
    step = _number(row.get("step"))
    if step is None or not math.isfinite(step):
        found.unreadable += step is None
        found.nonfinite += step is not None
        return
    for key, text in values.items():
        value = _number(text) if isinstance(text, str) else None
        if value is None:
            found.unreadable += 1
        elif not math.isfinite(value):
            found.nonfinite += 1
        else:
            curves[key].add(step, value)


def _part_number(stem: str) -> int:
    digits = stem.removeprefix("metrics.part")
    return int(digits) if digits.isascii() and digits.isdigit() else 0


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, overwrite: bool = False) -> list[Path]:
    """One PNG per panel that has data (loss, lr, quality, throughput) and `curves.png` with all of them, in
    `out_dir` (default `<run_dir>/plots`). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = read_metrics(run_dir)
    series = found.curves
    out = Path(out_dir) if out_dir else Path(run_dir) / "plots"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError("{path} holds plots already; pass {0} to redraw them", ("overwrite", True), path=out)
    if found.nonfinite or found.unreadable:
        log.warning(
            "captioner: note: %s: left out %d values that are NaN or infinite and %d that are not numbers "
            "(in the metric or its step)",
            run_dir,
            found.nonfinite,
            found.unreadable,
        )
    panels = {name: spec for name, spec in PANELS.items() if any(series.get(k) for k, _ in spec[2])}
    if not panels:
        wanted = sorted(k for p in PANELS.values() for k, _ in p[2])
        there = sorted(set(wanted) & set(found.columns))
        why = (
            f"its columns {there} hold no finite number at a numeric step"
            if there
            else f"it has none of the columns {wanted}"
        )
        raise OutputError(f"{run_dir}: nothing to plot: {why}")
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


def _draw(ax, series, title: str, ylabel: str, columns: list[tuple[str, str]]) -> None:
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


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    with atomic_file(path, "wb") as f:
        f.write(buffer.getvalue())
    return path
