"""Measuring never moves training state: `eval_mode` gives every submodule its own mode back, and the throughput
callback's one measuring forward leaves a conv stem's BatchNorm statistics as they were."""

from types import SimpleNamespace

import pytest
import torch

from captioner.config import CaptionerConfig
from captioner.model import Captioner
from captioner.train.modes import eval_mode
from captioner.train.throughput import TrainingThroughput


@pytest.fixture
def stem_model(tiny_config: CaptionerConfig) -> Captioner:
    torch.manual_seed(0)
    return Captioner(CaptionerConfig(**{**tiny_config.to_dict(), "encoder_conv_stem": [4, 8, 16]})).train()


def buffers(model: Captioner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}


def test_eval_mode_restores_each_module_mode_even_after_an_error(stem_model):
    stem_model.encoder.ln.eval()  # one submodule in eval mode already: it stays so
    before = {n: m.training for n, m in stem_model.named_modules()}
    with pytest.raises(RuntimeError), eval_mode(stem_model):
        assert not any(m.training for m in stem_model.modules())
        raise RuntimeError
    assert {n: m.training for n, m in stem_model.named_modules()} == before


def test_the_throughput_measurement_leaves_batchnorm_statistics_alone(stem_model):
    assert buffers(stem_model)  # the stem has BatchNorm
    before = buffers(stem_model)
    module = SimpleNamespace(model=stem_model, device=torch.device("cpu"))
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.ones(2, 5, dtype=torch.long)}
    TrainingThroughput().on_train_batch_start(None, module, batch, 0)
    after = buffers(stem_model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert stem_model.training and module.flops_per_batch > 0
