"""The shape of the house: dependencies point one way, no import cycles, small files, nothing reaches in."""

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "captioner"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """Every module `name` imports, at the top or inside functions (`from a import b` counts `a.b` when it is a
    module, else `a`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
            found.update(subs or {node.module})
    return found


GRAPH = {name: {m for m in imports(name) if m in MODULES} for name in MODULES}


def test_the_library_never_imports_benchmarks_experiments_or_tests():
    outside = {
        n: sorted(m for m in imports(n) if m.split(".")[0] in ("benchmarks", "experiments", "tests")) for n in MODULES
    }
    assert not {n: m for n, m in outside.items() if m}


def test_no_import_cycles():
    cycles, state = [], dict.fromkeys(GRAPH, 0)  # 0 new, 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state[nxt] == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if state[node] == 0:
            visit(node, [node])
    assert not cycles, cycles


def test_data_imports_neither_the_model_nor_training():
    forbidden = (
        "captioner.model",
        "captioner.encoder",
        "captioner.decoder",
        "captioner.attention",
        "captioner.generate",
        "captioner.inference",
        "captioner.train",
        "captioner.cli",
    )
    for name in (n for n in MODULES if n.startswith("captioner.data")):
        assert not [m for m in imports(name) if m.startswith(forbidden)], name


def test_the_model_and_inference_never_import_training_or_the_cli():
    for name in MODULES:
        if not name.startswith(("captioner.train", "captioner.cli", "captioner.__main__")):
            assert not [m for m in imports(name) if m.startswith(("captioner.train", "captioner.cli"))], name


def test_the_captioning_core_never_imports_the_runner():
    """Running over inputs (`captioner.runs`: files, writers, resume, ranks) is its own room: the core, the model and
    the options never import it; the commands, the server, evaluation and the runs themselves may."""
    may = ("captioner.runs", "captioner.cli", "captioner.serve", "captioner.evaluate", "captioner.train")
    for name in MODULES:
        if not name.startswith(may):
            assert not [m for m in imports(name) if m.startswith("captioner.runs")], name
    assert "captioner.runs.ranks" in MODULES and "captioner.ranks" not in MODULES


def test_nothing_reaches_through_the_trainer_into_the_other_side():
    """The module and the data are connected explicitly (`captioner.train.connect`); only callbacks, Lightning's
    glue, may look at `trainer.datamodule`."""
    for name, path in MODULES.items():
        if name not in ("captioner.train.callbacks", "captioner.train.figures"):  # the callback modules
            text = path.read_text()
            assert "trainer.datamodule" not in text and "lightning_module" not in text, name


def test_small_rooms():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert sizes["captioner.train.module"] <= 200
    assert not {n: s for n, s in sizes.items() if s > 300}
