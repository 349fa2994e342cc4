"""The benchmarks stay runnable (their numbers are printed, never asserted): each one answers --help."""

import importlib
import runpy
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize("name", ["decode", "caption", "folder", "data", "train", "epoch"])
def test_each_benchmark_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"benchmarks.{name}").main(["--help"])
    assert exit_.value.code == 0 and f"benchmark.py {name}" in capsys.readouterr().out


def test_the_script_refuses_an_unknown_benchmark(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "nope"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts/benchmark.py"), run_name="__main__")
    assert exit_.value.code == 2 and "decode|caption|folder|data|train|epoch" in capsys.readouterr().err
