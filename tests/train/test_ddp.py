"""Two-process DDP on the CPU (gloo) through `captioner fit`: disjoint samples per rank, identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, TINY_OVERRIDE

STEPS = 3


def run_ddp(
    tmp: Path, extra_model: dict | None = None, extra_trainer: dict | None = None, extra_data: dict | None = None
) -> list[dict]:
    record = tmp / "ranks"
    override = {
        "trainer": {
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "max_steps": STEPS,
            "limit_val_batches": 1,
            "val_check_interval": STEPS,
            "enable_progress_bar": False,
            "num_sanity_val_steps": 0,
            "callbacks": [
                {"class_path": "tests.train.ddp_helper.RecordRank", "init_args": {"out": str(record)}},
                {"class_path": "captioner.train.ExportModelPackage"},
            ],
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp / "runs"), "name": "shapes"},
            },
            **(extra_trainer or {}),
        },
        "model": {
            **TINY_OVERRIDE["model"],
            **(extra_model or {}),
        },
        "data": {"init_args": {**TINY_OVERRIDE["data"]["init_args"], **(extra_data or {})}},
    }
    path = tmp / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    cmd = [sys.executable, "-m", "captioner", "fit", "--config", str(ROOT / "configs/shapes.yaml"), "--config"]
    cmd.append(str(path))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MASTER_PORT", None)  # Lightning picks a free port
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [STEPS, STEPS]
    return ranks


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["online_lora", "feature_cache", "scst_bf16"])
def test_two_process_ddp(tmp_path, mode, request):
    """online_lora: images through the encoder, LoRA on a frozen tiny Llama; feature_cache: the demo's decoder from
    the frozen encoder's cached features; scst_bf16: self-critical training from that cache, in bf16-mixed (each
    rank fits the same CIDEr-D document frequencies from the training references)."""
    cached = mode in ("feature_cache", "scst_bf16")
    extra = (
        {"finetune": {"policy": "freeze_encoder"}, "speed": {"feature_cache": str(tmp_path / "cache")}}
        if cached
        else None
    )
    trainer = None
    if mode == "scst_bf16":
        extra = {**extra, "scst": {"samples": 3, "reference_images": 100, "max_new_tokens": 12}}
        trainer = {"precision": "bf16-mixed"}
    data = None
    if mode == "online_lora":
        llama = str(request.getfixturevalue("llama_dir"))
        extra = {
            "config": {**TINY_OVERRIDE["model"]["config"], "decoder_init_from": llama, "cross_attention_every": 2},
            "finetune": {"freeze_lm": True, "lora": {"groups": ["lm_attention", "cross_attention"], "r": 2}},
        }
        data = {"captions": {"truncate": True}}  # the test Llama's tokenizer is the tiny shapes BPE
    r0, r1 = run_ddp(tmp_path, extra, trainer, data)
    assert len(r0["seen"]) == len(r1["seen"]) == STEPS * 8
    assert not set(r0["seen"]) & set(r1["seen"]), "the ranks trained on the same samples"
    assert r0["weights"] == r1["weights"], "the ranks ended with different weights"
    assert (tmp_path / "runs/shapes/version_0/model/model.safetensors").is_file()  # rank 0 exported the package
    if cached:
        from captioner.data.feature_cache import FeatureCache

        (folder,) = (tmp_path / "cache").iterdir()
        assert FeatureCache.open(folder).missing() == []  # both ranks filled their shares of the 64 rows
