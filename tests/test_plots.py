"""`captioner plot` on metrics files that no logger wrote: non-finite or non-numeric values are left out and counted,
what is wrong is named in one line, and a long run is read in bounded memory."""

import logging
import tracemalloc

import pytest

from captioner import plots
from captioner.cli import main
from tests.cli.test_errors import one_line_error


def write(run, text):
    run.mkdir(exist_ok=True)
    (run / "metrics.csv").write_text(text)
    return run


def test_infinite_and_non_numeric_values_are_left_out_and_counted(tmp_path, caplog, capsys):
    run = write(tmp_path / "run", "step,train/loss\n0,2.0\ninf,1.5\n2,nan\n3,abc\nx,1.0\n4,1.0\n")
    found = plots.read_metrics(run)
    assert found.curves == {"train/loss": [(0.0, 2.0), (4.0, 1.0)]}
    assert (found.nonfinite, found.unreadable) == (2, 2)
    with caplog.at_level(logging.WARNING):
        assert main(["plot", str(run)]) == 0
    assert (run / "plots" / "loss.png").is_file()
    assert "left out 2 values that are NaN or infinite and 2 that are not numbers" in caplog.text


def test_what_cannot_be_plotted_is_named(tmp_path, capsys):
    run = write(tmp_path / "steps", "step,train/loss\na,1.0\nb,2.0\n")
    assert main(["plot", str(run)]) == 2
    assert "columns ['train/loss'] hold no finite number at a numeric step" in one_line_error(capsys)
    run = write(tmp_path / "columns", "step,other\n1,1.0\n")
    assert main(["plot", str(run)]) == 2
    assert "it has none of the columns" in one_line_error(capsys)
    run = tmp_path / "binary"
    run.mkdir()
    (run / "metrics.csv").write_bytes(b"step,train/loss\n1,1.0\n\xff\xfe\x00\n")
    assert main(["plot", str(run)]) == 2
    said = one_line_error(capsys)
    assert str(run / "metrics.csv") in said and "not a metrics CSV" in said


@pytest.mark.slow  # 200,000 rows read under tracemalloc: seconds
def test_a_long_run_is_thinned_as_it_is_read(tmp_path):
    rows = 200_000
    run = write(tmp_path / "long", "step,train/loss,val/loss\n" + "".join(f"{i},{1 / (i + 1)},\n" for i in range(rows)))
    tracemalloc.start()
    found = plots.read_metrics(run)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    curve = found.curves["train/loss"]
    assert plots.MAX_POINTS <= len(curve) <= 2 * plots.MAX_POINTS
    assert curve[0] == (0.0, 1.0) and curve[-1][0] > rows * 0.99  # the whole run, evenly thinned
    assert peak < 20 * 2**20  # the file is 5 MB; its rows are never all held
