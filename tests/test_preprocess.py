"""One preprocessing: what validation feeds the model for an image file is, bit for bit, what `captioner caption`
feeds for the same file, for every config in configs/ and every data format; old packages still load."""

import json
import logging

import pytest
import torch
import webdataset as wds

from captioner.config import CaptionerConfig
from captioner.data.images import DEFAULT_MAX_PIXELS
from captioner.model import Captioner
from captioner.preprocess import Preprocessing
from captioner.runs.files import file_loader
from captioner.shapes import write_imagefolder
from captioner.train.cli import trainer_cli
from tests.helpers import FORMATS, ROOT, own_data_args

# the COCO recipe's ViT-B/16 takes about 10 s per case to build, export and load: in the slow set
PAIRS_CONFIGS = ["pairs.yaml", "finetune.yaml", pytest.param("coco_vit_gpt2.yaml", marks=pytest.mark.slow)]
# what the configs ask for that this machine lacks (a GPU, the hub); none of it touches preprocessing
OFFLINE = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--data.init_args.num_workers=0",
    "--data.init_args.batch_size=2",
]
COCO_OFFLINE = ["--model.config.encoder_pretrained=false", "--model.config.decoder_init_from=null"]


def validation_and_caption_tensors(cli, tmp_path, path_of) -> tuple[torch.Tensor, torch.Tensor]:
    """The first validation image as the validation loader batches it, and the same file as `captioner caption`
    (from the package that training exports) loads it."""
    dm = cli.datamodule
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    path = path_of(dm, batch["index"][0])
    package = cli.model.model.save_pretrained(tmp_path / "package", cli.model.tokenizer)
    model, _ = Captioner.from_pretrained(package)
    (items,) = list(file_loader(model, [str(path)], 1, 0, DEFAULT_MAX_PIXELS))
    return batch["images"][0], items[0]["image"]


def pair_paths(folder):
    """The image file of a validation example of the PairsDataModule, by its key."""

    def path_of(dm, key):
        if dm.format == "webdataset":  # a shard sample's json holds the pair's key: its path inside the folder
            shard = wds.WebDataset(dm.val_path, shardshuffle=False, empty_check=False)
            return folder / json.loads(next(s for s in shard if s["__key__"] == key)["json"])["key"]
        return next(p.image for p in dm.datasets["val"].pairs if p.key == key)

    return path_of


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("config", PAIRS_CONFIGS)
def test_validation_and_caption_feed_the_same_tensor(config, fmt, tmp_path, trained_package):
    folder = write_imagefolder(tmp_path / "folder", "train", 12, size=(96, 64))  # not square: crops would differ
    args = ["--config", str(ROOT / "configs" / config), *OFFLINE, *own_data_args(fmt, folder, tmp_path)]
    if config == "finetune.yaml":
        args.append(f"--model.init_from={trained_package}")
    if config == "coco_vit_gpt2.yaml":
        args += COCO_OFFLINE
    cli = trainer_cli(args, run=False)
    seen_in_validation, seen_by_caption = validation_and_caption_tensors(cli, tmp_path, pair_paths(folder))
    assert seen_in_validation.shape == seen_by_caption.shape == (3, *cli.model.model.preprocessing.input_size[1:])
    assert torch.equal(seen_in_validation, seen_by_caption)


def test_shapes_validation_scene_equals_its_png(tmp_path):
    """The shapes config renders its scenes in memory; `captioner shapes` writes the same scenes as PNGs."""
    folder = write_imagefolder(tmp_path / "shapes", "val", 2)
    args = ["--config", str(ROOT / "configs/shapes.yaml"), *OFFLINE, "--data.init_args.val_size=2"]
    cli = trainer_cli(args, run=False)

    def path_of(dm, index):
        return folder / f"images/val_{index:06d}.png"

    seen_in_validation, seen_by_caption = validation_and_caption_tensors(cli, tmp_path, path_of)
    assert torch.equal(seen_in_validation, seen_by_caption)


def test_the_package_records_its_preprocessing(tiny_model, tokenizer, tmp_path):
    recorded = json.loads((tiny_model.save_pretrained(tmp_path / "p", tokenizer) / "config.json").read_text())
    pre = Preprocessing.from_dict(recorded["preprocessing"])
    assert pre == tiny_model.preprocessing
    assert (pre.input_size, pre.crop_pct, pre.crop_mode) == ((3, 32, 32), 1.0, "squash")  # the whole image
    assert (pre.mean, pre.interpolation) == ((0.5, 0.5, 0.5), "bicubic")  # timm's, for this ViT


def test_preprocessing_overrides_and_unknown_fields():
    model = Captioner(CaptionerConfig.from_name("tiny", preprocessing={"crop_mode": "center", "crop_pct": 0.875}))
    assert (model.preprocessing.crop_mode, model.preprocessing.crop_pct) == ("center", 0.875)
    with pytest.raises(ValueError, match=r"unknown preprocessing field\(s\) \['crop'\]"):
        Captioner(CaptionerConfig.from_name("tiny", preprocessing={"crop": 1.0}))


def test_a_package_from_before_still_loads_with_a_notice(tiny_model, tokenizer, tmp_path, caplog):
    package = tiny_model.save_pretrained(tmp_path / "old", tokenizer)
    config = json.loads((package / "config.json").read_text())
    del config["preprocessing"]  # what packages exported before the change hold
    (package / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        model, _ = Captioner.from_pretrained(package)
    (notice,) = [r.getMessage() for r in caplog.records if "records no preprocessing" in r.getMessage()]
    assert "\n" not in notice and str(package) in notice
    assert (model.preprocessing.crop_pct, model.preprocessing.crop_mode) == (1.0, "center")  # as captioned then
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


@pytest.mark.parametrize(("crop_mode", "crop_pct"), [("squash", 1.0), ("center", 0.9), ("center", 1.0)])
def test_the_two_stages_of_the_eval_transform_equal_it_bit_for_bit(tiny_model, crop_mode, crop_pct):
    """What `captioner serve` batches: PIL resize/crop per image, then to-tensor + normalise on the batch."""
    from dataclasses import replace

    import numpy as np

    from captioner.shapes import make_scene

    pre = replace(tiny_model.preprocessing, crop_mode=crop_mode, crop_pct=crop_pct)
    resize, to_batch = pre.eval_stages()
    images = [make_scene("test", i).image.resize((60 + 7 * i, 50 + 3 * i)) for i in range(4)]  # odd sizes
    staged = to_batch(torch.stack([torch.from_numpy(np.array(resize(im))) for im in images]))
    assert torch.equal(staged, torch.stack([pre.eval_transform()(im) for im in images]))
