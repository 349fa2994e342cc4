"""Each data format trains a few steps through `captioner fit`; fine-tuning keeps the tokenizer and the policy."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captioner.cli import main
from tests.helpers import ROOT, TINY_MODEL


def fit(config: str, runs: Path, *extra: str) -> Path:
    args = [
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
        "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={runs}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        *extra,
    ]
    assert main(["fit", "--config", str(ROOT / config), *args]) == 0
    packages = list(runs.glob("*/version_*/model"))
    assert len(packages) == 1 and (packages[0] / "model.safetensors").is_file()
    return packages[0]


def pairs_args(fmt: str, train: str, *extra: str) -> list[str]:
    return [
        *TINY_MODEL,
        f"--data.init_args.format={fmt}",
        f"--data.init_args.train={train}",
        "--data.init_args.vocab_size=300",
        *extra,
    ]


def test_fit_imagefolder(shapes_folder, tmp_path):
    fit(
        "configs/pairs.yaml",
        tmp_path / "runs",
        *pairs_args("imagefolder", str(shapes_folder), "--data.init_args.val_fraction=0.25"),
    )


def test_fit_table(shapes_folder, tmp_path):
    rows = [{"image": f"images/train_{i:06d}.png", "caption": f"picture number {i}"} for i in range(12)]
    table = tmp_path / "pairs.csv"
    table.write_text("image,caption\n" + "".join(f"{r['image']},{r['caption']}\n" for r in rows))
    extra = [
        f"--data.init_args.root={shapes_folder}",
        "--data.init_args.image_column=image",
        "--data.init_args.caption_column=caption",
        "--data.init_args.val_fraction=0.25",
    ]
    fit("configs/pairs.yaml", tmp_path / "runs", *pairs_args("table", str(table), *extra))


def test_fit_coco(shapes_folder, tmp_path):
    coco = tmp_path / "coco"
    for split, start in (("train", 0), ("val", 8)):
        (coco / f"{split}2017").mkdir(parents=True)
        images = []
        for i in range(start, start + (8 if split == "train" else 4)):
            shutil.copy(shapes_folder / f"images/train_{i:06d}.png", coco / f"{split}2017/{i}.png")
            images.append({"id": i, "file_name": f"{i}.png"})
        anns = [{"image_id": im["id"], "caption": f"a scene, number {im['id']}"} for im in images]
        (coco / "annotations").mkdir(exist_ok=True)
        (coco / f"annotations/captions_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": anns})
        )
    assert main(["prepare-coco", str(coco)]) == 0
    fit("configs/pairs.yaml", tmp_path / "runs", *pairs_args("coco", str(coco / "annotations/captions_train2017.json")))


def test_fit_karpathy(shapes_folder, tmp_path):
    split_of = ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2
    images = [
        {
            "filepath": "images",
            "filename": f"train_{i:06d}.png",
            "split": s,
            "imgid": i,
            "sentences": [{"raw": f"karpathy caption {i}"}],
        }
        for i, s in enumerate(split_of)
    ]
    (shapes_folder / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    fit("configs/pairs.yaml", tmp_path / "runs", *pairs_args("karpathy", str(shapes_folder / "dataset_flickr8k.json")))


def test_fit_webdataset(shapes_folder, tmp_path):
    assert main(["shards", str(tmp_path / "shards/%05d.tar"), "--input", str(shapes_folder), "--max-count", "4"]) == 0
    extra = [f"--data.init_args.val={tmp_path}/shards/00002.tar", "--data.init_args.epoch_samples=8"]
    fit(
        "configs/pairs.yaml",
        tmp_path / "runs",
        *pairs_args("webdataset", f"{tmp_path}/shards/{{00000..00001}}.tar", *extra),
    )


@pytest.mark.parametrize("policy", ["cross_attention", "freeze_encoder"])
def test_finetune_keeps_tokenizer_and_freezes(policy, trained_package, shapes_folder, tmp_path):
    rows = [
        {"file_name": f"images/train_{i:06d}.png", "text": "a crimson disc beside a teal rhombus ✨"} for i in range(12)
    ]
    (shapes_folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = fit(
        "configs/finetune.yaml",
        tmp_path / "runs",
        f"--model.init_from={trained_package}",
        f"--data.init_args.train={shapes_folder}",
        f"--model.finetune={policy}",
        "--model.lr=0.01",
        "--data.init_args.val_fraction=0.25",
    )
    assert (out / "tokenizer.json").read_text() == (trained_package / "tokenizer.json").read_text()
    before, after = load_file(trained_package / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not before[k].equal(after[k])}
    assert any(k.startswith("decoder.h.0.cross.") for k in changed)
    assert not any(k.startswith("encoder.backbone.") and "norm" not in k for k in changed)
    if policy == "cross_attention":
        assert not any(k.startswith("decoder.") and ".cross." not in k and "ln" not in k for k in changed)
    else:
        assert any(k.startswith("decoder.h.0.mlp.") for k in changed)


def test_finetune_needs_a_package(tmp_path, shapes_folder):
    with pytest.raises(FileNotFoundError, match="not a model package"):
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/finetune.yaml"),
                f"--model.init_from={tmp_path}",
                f"--data.init_args.train={shapes_folder}",
            ]
        )


def test_parameter_groups_encoder_lr_and_no_decay(tiny_model):
    from captioner.train.build import apply_finetune_policy
    from captioner.train.optim import parameter_groups

    groups = parameter_groups(tiny_model, weight_decay=0.1, lr=1e-3, encoder_lr_mult=0.1)
    backbone = {id(p) for p in tiny_model.encoder.backbone.parameters()}
    for g in groups:
        in_backbone = {id(p) in backbone for p in g["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all not
        assert g["lr"] == pytest.approx(1e-4 if in_backbone.pop() else 1e-3)
        if g["weight_decay"] > 0:
            assert all(p.ndim >= 2 for p in g["params"])
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(tiny_model.decoder.wte.weight) in no_decay and id(tiny_model.decoder.ln_f.weight) in no_decay
    assert sum(len(g["params"]) for g in groups) == len(list(tiny_model.parameters()))
    apply_finetune_policy(tiny_model, "freeze_encoder")
    trainable = sum(len(g["params"]) for g in parameter_groups(tiny_model, 0.1, 1e-3))
    n_trainable = len([p for p in tiny_model.parameters() if p.requires_grad])
    assert trainable == n_trainable < len(list(tiny_model.parameters()))


def test_finetuning_reinitialises_never_trained_token_embeddings(trained_package):
    from captioner.model import Captioner
    from captioner.train.module import CaptionerModule

    used = json.loads((trained_package / "training.json").read_text())["used_token_ids"]
    base, _ = Captioner.from_pretrained(trained_package)
    module = CaptionerModule(init_from=str(trained_package))
    before, after = base.decoder.wte.weight, module.model.decoder.wte.weight
    unused = [i for i in range(before.size(0)) if i not in set(used)]
    assert used and unused
    assert torch.equal(before[used], after[used])
    assert not torch.equal(before[unused], after[unused])
    known = before[used]
    assert (after[unused].std(0) - known.std(0)).abs().mean() < 0.5 * known.std(0).mean()  # on the known rows' scale
    kept = CaptionerModule(init_from=str(trained_package), reinit_unused_tokens=False)
    assert torch.equal(kept.model.decoder.wte.weight, before)
