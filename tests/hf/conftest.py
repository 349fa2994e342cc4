"""The export-hf folder of the tiny trained package, shared by the transformers tests."""

import pytest

from captioner.cli import main


@pytest.fixture(scope="session")
def exported(trained_package, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "tiny-hf"
    assert main(["export-hf", str(trained_package), str(out)]) == 0
    return out
