"""The suite's warning rules (pyproject.toml, `filterwarnings`): our own warnings fail a test unless it expects them."""

import warnings

import pytest


def warn(message: str, category: type[Warning], module: str) -> list[str]:
    """Raise `message` as if from `module` under the suite's filters; the messages that were shown."""
    with warnings.catch_warnings(record=True) as seen:  # keeps the filters, records instead of printing
        warnings.warn_explicit(message, category, module.replace(".", "/") + ".py", 1, module=module)
    return [str(w.message) for w in seen]


def test_a_warning_raised_in_captioner_code_fails_the_test():
    with pytest.raises(UserWarning, match="from the library"):
        warn("from the library", UserWarning, "captioner.data.collate")


def test_a_warning_raised_in_a_dependency_is_shown():
    assert warn("from a dependency", DeprecationWarning, "lightning.pytorch.cli") == ["from a dependency"]


@pytest.mark.filterwarnings("ignore:skipped an example")
def test_a_test_that_expects_one_of_ours_names_it():
    assert warn("skipped an example", UserWarning, "captioner.data.collate") == []
