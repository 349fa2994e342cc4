"""What tests share besides fixtures: the repository root, the tiny-model flags, and one way to train a package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Debian's Chromium, which Playwright drives in the browser tests (its own browser builds cannot be downloaded here)
CHROMIUM = os.environ.get("CAPTIONER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TINY_MODEL = [
    "--model.config.encoder_img_size=32",
    "--model.config.encoder_kwargs={embed_dim: 32, depth: 1, num_heads: 2}",
    "--model.config.n_layer=1",
    "--model.config.n_embd=32",
    "--model.config.n_head=2",
]
TINY_SHAPES_DATA = [
    "--data.init_args.train_size=64",
    "--data.init_args.val_size=16",
    "--data.init_args.batch_size=8",
    "--data.init_args.num_workers=0",
    "--model.tokenizer.train_captions=800",
]

# TINY_MODEL and TINY_SHAPES_DATA as a YAML override (a second --config file)
TINY_OVERRIDE = {
    "model": {
        "config": {
            "encoder_img_size": 32,
            "encoder_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2},
            "n_layer": 1,
            "n_embd": 32,
            "n_head": 2,
        },
        "tokenizer": {"train_captions": 800},
    },
    "data": {"init_args": {"train_size": 64, "batch_size": 8, "num_workers": 0}},
}


def fit_shapes_package(runs: Path, overrides: list[str]) -> Path:
    """`captioner fit --config configs/shapes.yaml` with overrides, logging under `runs`; the exported package."""
    from captioner.cli import main

    config = str(ROOT / "configs/shapes.yaml")
    assert main(["fit", "--config", config, *overrides, f"--trainer.logger.init_args.save_dir={runs}"]) == 0
    (package,) = runs.glob("shapes/version_*/model")
    return package


def fit(trainer, module, datamodule) -> None:
    """`trainer.fit` from Python, as the CLI does it: the module and the data connected first."""
    from captioner.train import connect

    connect(module, datamodule, trainer)
    trainer.fit(module, datamodule)


FORMATS = ["imagefolder", "table", "coco", "karpathy", "webdataset"]


def own_data_args(fmt: str, folder: Path, tmp: Path) -> list[str]:
    """`--data.init_args` flags that read the 12 images of the imagefolder `folder` in format `fmt` (the files
    are written under `tmp`); each format keeps some images for validation."""
    import json
    import shutil

    from captioner.cli import main

    names = [r["file_name"] for r in map(json.loads, (folder / "metadata.jsonl").read_text().splitlines())]
    # a BPE trained on these few captions barely merges: some need more than 40 tokens, which fit would refuse
    args = [f"--data.init_args.format={fmt}", "--data.init_args.captions.truncate=true"]
    if fmt == "imagefolder":
        return [*args, f"--data.init_args.train={folder}", "--data.init_args.split.val_fraction=0.25"]
    if fmt == "table":
        table = tmp / "pairs.csv"
        table.write_text("image,caption\n" + "".join(f"{n},picture number {i}\n" for i, n in enumerate(names)))
        return [
            *args,
            f"--data.init_args.train={table}",
            f"--data.init_args.root={folder}",
            "--data.init_args.columns.image=image",
            "--data.init_args.columns.caption=caption",
            "--data.init_args.split.val_fraction=0.25",
        ]
    if fmt == "coco":
        coco = tmp / "coco"
        for split, ids in (("train", range(8)), ("val", range(8, 12))):
            (coco / f"{split}2017").mkdir(parents=True)
            images = [{"id": i, "file_name": Path(names[i]).name} for i in ids]
            for i in ids:
                shutil.copy(folder / names[i], coco / f"{split}2017")
            anns = [{"image_id": im["id"], "caption": f"a scene, number {im['id']}"} for im in images]
            (coco / "annotations").mkdir(exist_ok=True)
            (coco / f"annotations/captions_{split}2017.json").write_text(
                json.dumps({"images": images, "annotations": anns})
            )
        assert main(["prepare-coco", str(coco)]) == 0
        return [
            *args,
            f"--data.init_args.train={coco / 'annotations/captions_train2017.json'}",
            "--data.init_args.root=null",
        ]
    if fmt == "karpathy":
        split_of = ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2
        images = [
            {
                "filepath": str(Path(n).parent),
                "filename": Path(n).name,
                "split": s,
                "imgid": i,
                "sentences": [{"raw": f"karpathy caption {i}"}],
            }
            for i, (n, s) in enumerate(zip(names, split_of, strict=True))
        ]
        (folder / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
        return [*args, f"--data.init_args.train={folder / 'dataset_flickr8k.json'}", "--data.init_args.root=null"]
    assert main(["shards", str(tmp / "shards/%05d.tar"), "--input", str(folder), "--max-count", "4"]) == 0
    return [
        *args,
        f"--data.init_args.train={tmp}/shards/{{00000..00001}}.tar",
        f"--data.init_args.val={tmp}/shards/00002.tar",
        "--data.init_args.stream.epoch_samples=8",
    ]


def tiny_shapes(train_size: int, **overrides):
    """A ShapesDataModule for the `tiny` config (block size 24): short captions for speed, most of them cut on
    purpose (`truncate`)."""
    from captioner.data import Captions
    from captioner.shapes import ShapesDataModule

    defaults = {"val_size": 8, "batch_size": 8, "num_workers": 0, "captions": Captions(max_length=24, truncate=True)}
    return ShapesDataModule(train_size=train_size, **{**defaults, **overrides})


def tiny_module(config=None, **kwargs):
    """A CaptionerModule of the `tiny` config (or `config`) whose tokenizer is a 300-token BPE of 400 shapes
    captions (`model.tokenizer`), with validation captioning off unless `validation` is given."""
    from captioner.config import CaptionerConfig
    from captioner.train import CaptionerModule, TokenizerSource, Validation

    kwargs.setdefault("tokenizer", TokenizerSource(vocab_size=300, train_captions=400))
    kwargs.setdefault("validation", Validation(generate_batches=0))
    return CaptionerModule(config or CaptionerConfig.from_name("tiny"), **kwargs)


def built(module, texts=None):
    """`module` with its model built as `train.connect` builds it, without data: the tokenizer from its package,
    or trained on `texts` (default: the captions of 100 shapes scenes)."""
    from captioner.shapes import captions, scene_objects
    from captioner.train.vocabulary import resolve_tokenizer

    if texts is None:
        texts = [c for i in range(100) for c in captions(scene_objects("train", i, [], 3))]
    source = module.tokenizer_source
    module.connect(resolve_tokenizer(source, module.start_package(), module.architecture, lambda: iter(texts)))
    return module


def hub_cache(cache: Path, repo_id: str, package: Path, refs: tuple[str, ...] = ("main",)) -> str:
    """Put `package` into a Hugging Face cache at `cache` as huggingface_hub lays a download out: content in
    blobs/ (named by sha256), the commit's snapshot as symlinks into them, and refs/<name> holding the commit. The
    commit hash is returned."""
    import hashlib
    import os

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}:{sorted(p.name for p in package.iterdir())}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in package.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return commit
