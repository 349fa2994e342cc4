"""`CaptionerModule.provenance()`: what the exported package's training.json says about how it was made."""

from captioner.train.module import CaptionerModule
from captioner.train.scst import SCST
from captioner.train.settings import Finetuning, Optimizer


def test_a_run_from_scratch_records_cross_entropy_no_start_and_its_optimiser(tiny_config):
    optimizer = Optimizer(lr=3e-4, betas=(0.9, 0.95), warmup_steps=7)
    found = CaptionerModule(tiny_config, optimizer=optimizer).provenance()
    assert found["objective"] == {"name": "cross_entropy"} and found["started_from"] is None
    assert found["optimizer"] == {
        "lr": 3e-4,
        "weight_decay": 0.05,
        "betas": [0.9, 0.95],
        "warmup_steps": 7,
        "min_lr_ratio": 0.1,
        "encoder_lr_mult": 1.0,
        "encoder_layer_decay": 1.0,
        "encoder_frozen_epochs": 0,
        "finetune": "full",
    }


def test_an_scst_fine_tune_records_its_reward_baseline_samples_and_start(trained_package):
    module = CaptionerModule(
        init_from=str(trained_package),
        scst=SCST(samples=3, baseline="greedy"),
        optimizer=Optimizer(lr=1e-5),
        finetune=Finetuning(policy="freeze_encoder"),
    )
    found = module.provenance()
    assert found["objective"] == {"name": "scst", "reward": "CIDEr-D", "baseline": "greedy", "samples": 3}
    assert found["started_from"] == {"path": str(trained_package.resolve())}
    assert found["optimizer"]["lr"] == 1e-5 and found["optimizer"]["finetune"] == "freeze_encoder"
