"""configs/shapes_llama.yaml (RMSNorm, RoPE, SwiGLU, grouped-query attention) trains and exports, tiny and fast."""

import csv
import json

from captioner.cli import main
from captioner.inference import caption_batch
from captioner.model import Captioner
from tests.helpers import ROOT, TINY_MODEL, TINY_SHAPES_DATA


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
