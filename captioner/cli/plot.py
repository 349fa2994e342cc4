"""`captioner plot RUN_DIR`: the run's training curves as PNGs (no TensorBoard server needed)."""

from __future__ import annotations

from captioner.cli.common import Parser


def plot(argv: list[str]) -> int:
    parser = Parser(
        prog="captioner plot",
        description="Draw a run's training curves (loss, learning rate, validation scores, throughput) from its "
        "metrics.csv as PNGs in RUN_DIR/plots.",
    )
    parser.add_argument("run_dir", help="a run folder, e.g. runs/shapes/version_0")
    parser.add_argument("--output", "-o", help="folder for the PNGs (default RUN_DIR/plots)")
    parser.add_argument("--overwrite", action="store_true", help="redraw plots that exist")
    args = parser.parse_args(argv)
    from captioner.plots import plot_run

    for path in plot_run(args.run_dir, args.output, args.overwrite):
        print(path)
    return 0
