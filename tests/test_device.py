"""Where inference runs: device names resolved once, precisions as autocast, errors naming the argument."""

import contextlib

import pytest
import torch

from captioner.device import autocast, resolve_device
from captioner.errors import ArgumentError


def test_device_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")  # auto


@pytest.mark.parametrize(("name", "says"), [("nonsense", "not a device"), ("cuda:99", "asked for, but")])
def test_a_device_that_is_not_there_names_the_argument(name, says):
    with pytest.raises(ArgumentError, match=says) as refused:
        resolve_device(name)
    assert str(refused.value).startswith(f"device='{name}'") and refused.value.as_flags().startswith(f"--device {name}")
    assert "--" not in str(refused.value)


def test_precisions_are_autocast_contexts():
    cpu = torch.device("cpu")
    assert isinstance(autocast(cpu, "32"), contextlib.nullcontext)
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ArgumentError, match=r"^precision='16' needs a GPU; use precision='bf16' or precision='32'"):
        autocast(cpu, "16")
    with pytest.raises(ArgumentError, match="must be one of 32, bf16, 16"):
        autocast(cpu, "64")
