"""The benchmarks stay runnable (their numbers are printed, never asserted): each one answers --help, and every
place that lists them (the script's table, its help, the package docstring, the docs' layout and commands) names
the same set."""

import importlib
import re
import runpy
import sys

import pytest

from tests.helpers import ROOT

NAMES = runpy.run_path(str(ROOT / "scripts/benchmark.py"), run_name="listing")["NAMES"]


def test_the_table_names_every_benchmark_module_and_only_those():
    # a benchmark's second module is named after it (decode_llama: `decode --decoder llama`)
    modules = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if "_" not in p.stem} - {"common"}
    assert set(NAMES) == modules


@pytest.mark.parametrize("name", NAMES)
def test_each_benchmark_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"benchmarks.{name}").main(["--help"])
    assert exit_.value.code == 0 and f"benchmark.py {name}" in capsys.readouterr().out


def test_the_docs_and_the_docstrings_name_every_benchmark():
    (layout,) = re.findall(r"^benchmarks/ +(.*)$", (ROOT / "docs/DEVELOPMENT.md").read_text(), flags=re.M)
    commands = (ROOT / "docs/BENCHMARKS.md").read_text()
    listed = {
        "docs/DEVELOPMENT.md layout": set(re.findall(r"\w+", layout.split("(")[0])),
        "docs/BENCHMARKS.md commands": set(re.findall(r"scripts/benchmark\.py (\w+)", commands)),
        "benchmarks/__init__.py": set(re.findall(r"\w+", importlib.import_module("benchmarks").__doc__.split(":")[-1])),
        "scripts/benchmark.py usage": set(
            re.search(
                r"benchmark\.py ([\w|]+)",
                runpy.run_path(str(ROOT / "scripts/benchmark.py"), run_name="listing")["__doc__"],
            )
            .group(1)
            .split("|")
        ),
    }
    for where, names in listed.items():
        assert set(NAMES) <= names, f"{where} misses {sorted(set(NAMES) - names)}"


def test_the_script_refuses_an_unknown_benchmark(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", "nope"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts/benchmark.py"), run_name="__main__")
    assert exit_.value.code == 2 and "|".join(NAMES) in capsys.readouterr().err


def test_the_llama_decode_benchmark_compares_the_same_tokens(capsys):
    from benchmarks import decode

    argv = ["--decoder", "llama", "--llama-size", "tiny", "--batch", "3", "--new-tokens", "6", "--image-tokens", "4"]
    assert decode.main([*argv, "--cross-every", "2", "--warmup", "0", "--repeats", "1"]) == 0
    table = capsys.readouterr().out.split("| same tokens |")[1]
    assert table.count("| yes |") == 2 and "NO" not in table  # batch 1 and 3
