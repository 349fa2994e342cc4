"""Library errors speak to a Python caller: they name arguments as Python does (`device='cpu'`), the command says
its flags (`--device cpu`), and no raise outside captioner/cli/ spells a flag (read from the source)."""

import ast
import pickle
import re

import pytest

from captioner.errors import ArgumentError
from captioner.outputs import OutputError, OutputExists, atomic_file
from tests.helpers import ROOT

FLAG = re.compile(r"--[A-Za-z]")


def flag_raises() -> list[str]:
    """`file:line` of every `raise X(...)` outside captioner/cli/ whose message text holds a flag (`--letter`)."""
    found = []
    for path in sorted((ROOT / "captioner").rglob("*.py")):
        if path.relative_to(ROOT / "captioner").parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                texts = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and type(n.value) is str]
                if any(FLAG.search(t) for t in texts):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_library_error_names_a_command_line_flag():
    assert flag_raises() == []


def test_the_scan_finds_a_flag_in_a_raise(tmp_path, monkeypatch):
    fake = tmp_path / "captioner"
    (fake / "cli").mkdir(parents=True)
    (fake / "lib.py").write_text('def f(x):\n    raise ValueError(f"{x}: pass --overwrite")\n')
    (fake / "cli" / "cmd.py").write_text('raise SystemExit("--help")\n')  # the command may
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert flag_raises() == ["captioner/lib.py:2"]


def test_an_argument_error_is_python_for_str_and_flags_for_the_command():
    err = ArgumentError(
        "{0} asked for; use {1} or {2} ({where})",
        ("device", "cuda:7"),
        ("device", "cpu"),
        ("overwrite", True),
        where="a {braced} path",
    )
    assert str(err) == "device='cuda:7' asked for; use device='cpu' or overwrite=True (a {braced} path)"
    assert err.as_flags() == "--device cuda:7 asked for; use --device cpu or --overwrite (a {braced} path)"
    again = pickle.loads(pickle.dumps(err))  # from a DataLoader worker or another rank
    assert type(again) is ArgumentError and again.as_flags() == err.as_flags()
    assert isinstance(err, ValueError) and str(ArgumentError("as {it} is")) == "as {it} is"


def test_an_existing_output_is_a_file_exists_error_naming_overwrite(tmp_path):
    (tmp_path / "a.txt").write_text("mine")
    with pytest.raises(FileExistsError) as refused, atomic_file(tmp_path / "a.txt", overwrite=False):
        pass
    assert isinstance(refused.value, OutputExists) and "pass overwrite=True" in str(refused.value)
    assert "pass --overwrite" in refused.value.as_flags()
    assert issubclass(OutputError, ValueError)
