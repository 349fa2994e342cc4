"""configs/shapes_llama.yaml (RMSNorm, RoPE, SwiGLU, grouped-query attention) trains and exports, tiny and fast;
its package goes everywhere a package goes: the caption command (with attention maps) and the served API."""

import csv
import json

import pytest

from captioner.cli import main
from captioner.inference import caption_batch
from captioner.model import Captioner
from captioner.shapes.scenes import write_imagefolder
from tests.helpers import ROOT, TINY_MODEL, TINY_SHAPES_DATA


@pytest.mark.slow  # a training run and the package through caption and serve (about 10 s)
def test_the_llama_style_demo_config_fits_and_its_package_captions(tmp_path, images):
    runs = tmp_path / "runs"
    tiny = [*TINY_MODEL, "--model.config.n_head=4", "--model.config.head_size=8", "--model.config.intermediate_size=64"]
    steps = ["--trainer.max_steps=12", "--trainer.val_check_interval=12", "--trainer.log_every_n_steps=1"]
    args = ["fit", "--config", str(ROOT / "configs/shapes_llama.yaml"), *tiny, *TINY_SHAPES_DATA, *steps]
    assert main([*args, f"--trainer.logger.init_args.save_dir={runs}"]) == 0
    (package,) = runs.glob("shapes_llama/version_*/model")
    config = json.loads((package / "config.json").read_text())
    assert (config["norm_class_name"], config["positions"], config["mlp_class_name"]) == ("RMSNorm", "rope", "LLaMAMLP")
    assert (config["n_head"], config["n_query_groups"]) == (4, 2)
    rows = list(csv.DictReader((package.parent / "metrics.csv").read_text().splitlines()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 10 and sum(losses[-3:]) < sum(losses[:3])  # it learns
    model, tok = Captioner.from_pretrained(package)
    assert all(isinstance(c.text, str) for c in caption_batch(model, tok, images))
    downstream(package, model, tok, tmp_path)


def downstream(package, model, tok, tmp_path):
    """`captioner caption` with 2 beams and attention maps, and the API's rows equal to the command's."""
    from fastapi.testclient import TestClient

    from captioner.serve.api import Limits, Service, create_api

    write_imagefolder(tmp_path / "imgs", "test", 2)
    files = sorted((tmp_path / "imgs" / "images").iterdir())
    out, maps = tmp_path / "rows.jsonl", tmp_path / "maps"
    args = ["caption", str(package), *map(str, files), "-o", str(out), "--workers", "0", "--num-beams", "2"]
    assert main([*args, "--attention-maps", str(maps)]) == 0
    assert len(list(maps.glob("*.attention.png"))) == 2
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    service = Service(model, tok, "llama-style", Limits())
    try:
        upload = [("image", (f.name, f.read_bytes(), "image/png")) for f in files]
        answer = TestClient(create_api(service)).post("/caption", files=upload, params={"num_beams": 2})
    finally:
        service.batcher.stop()
    assert answer.status_code == 200, answer.text
    assert [r["caption"] for r in answer.json()["results"]] == [r["caption"] for r in expected]
