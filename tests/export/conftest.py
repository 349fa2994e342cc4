"""The ONNX exports the tests share: each style's tiny package and its `captioner export-onnx` folder (seconds
each, made once per session)."""

import pytest

from captioner.cli import main
from tests.export.packages import STYLES, tiny_package


@pytest.fixture(scope="session", params=sorted(STYLES))
def exported(request, tmp_path_factory, tokenizer):
    """(package, export folder) of a tiny package of each style."""
    tmp = tmp_path_factory.mktemp(f"onnx-{request.param}")
    package = tiny_package(tmp / "package", tokenizer, request.param)
    assert main(["export-onnx", str(package), str(tmp / "onnx-export")]) == 0
    return package, tmp / "onnx-export"
