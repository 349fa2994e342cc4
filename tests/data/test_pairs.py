"""Readers for imagefolder, tables, COCO and Karpathy files, and their errors on bad input."""

import json
import logging

import pytest
import torch
import webdataset as wds

from captioner.cli import main
from captioner.data.collate import CaptionCollator, DecodeFailures
from captioner.data.examples import PairsDataset
from captioner.data.pairs import PairsDataModule
from captioner.data.settings import ImageChecks, Split
from captioner.data.sources import (
    DataError,
    clean,
    coco_image_dir,
    read_coco,
    read_imagefolder,
    read_karpathy,
    read_table,
)
from captioner.shapes import make_scene


def test_imagefolder_jsonl_with_caption_lists(shapes_folder):
    pairs = read_imagefolder(shapes_folder)
    assert len(pairs) == 12 and all(len(p.captions) == 4 for p in pairs)
    assert pairs[0].image == str(shapes_folder / "images/train_000000.png")


def test_csv_with_quoted_commas_newlines_and_one_row_per_caption(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        'file_name,text\na.png,"a cat, sitting\non a mat"\na.png,second caption\nb.png,"He said ""hi"""\n',
        encoding="utf-8",
    )
    pairs = {p.key: p for p in read_imagefolder(tmp_path)}
    assert pairs["a.png"].captions == ["a cat, sitting\non a mat", "second caption"]
    assert pairs["b.png"].captions == ['He said "hi"']


def test_missing_caption_column_lists_the_columns(tmp_path):
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "caption": "x"}) + "\n")
    with pytest.raises(DataError, match=r"no column 'text'.*\['caption', 'file_name'\]"):
        read_imagefolder(tmp_path)
    assert read_imagefolder(tmp_path, caption_column="caption")[0].captions == ["x"]


def test_non_utf8_metadata_names_the_line(tmp_path):
    (tmp_path / "metadata.jsonl").write_bytes(
        b'{"file_name": "a.png", "text": "ok"}\n{"file_name": "b.png", "text": "caf\xe9"}\n'
    )
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        read_imagefolder(tmp_path)


def test_bad_json_line_is_named(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        read_table(tmp_path / "pairs.jsonl")


def test_empty_captions_dropped_with_count(shapes_folder, caplog):
    pairs = read_imagefolder(shapes_folder)
    pairs[0].captions = ["  ", ""]
    pairs[1].captions.append("\t")
    with caplog.at_level(logging.WARNING):
        kept = clean(pairs, "test data")
    assert len(kept) == 11 and "dropped 3 empty" in caplog.text


def test_missing_images_one_error_or_dropped(shapes_folder, caplog):
    pairs = read_imagefolder(shapes_folder)
    for p in pairs[:3]:
        p.image += ".missing"
    with pytest.raises(DataError, match=r"3 of 12 image file\(s\).*train_000000.png.missing"):
        clean(pairs, "test data")
    with caplog.at_level(logging.WARNING):
        assert len(clean(pairs, "test data", drop_missing=True)) == 9
    assert "dropped 3 missing" in caplog.text


def test_table_paths_relative_to_root(shapes_folder, tmp_path):
    rows = [{"image": f"images/train_{i:06d}.png", "caption": f"caption {i}"} for i in range(3)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_table(tmp_path / "pairs.jsonl", shapes_folder, "image", "caption")
    assert [p.captions for p in pairs] == [["caption 0"], ["caption 1"], ["caption 2"]]
    assert len(clean(pairs, "table")) == 3


def test_coco_and_karpathy(shapes_folder, tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "train_000000.png"}, {"id": 9, "file_name": "train_000001.png"}],
        "annotations": [
            {"image_id": 7, "caption": "one"},
            {"image_id": 7, "caption": "two"},
            {"image_id": 9, "caption": "x"},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/captions_train2017.json").write_text(json.dumps(coco))
    assert coco_image_dir(tmp_path / "annotations/captions_train2017.json") == str(tmp_path / "train2017")
    pairs = read_coco(tmp_path / "annotations/captions_train2017.json", shapes_folder / "images")
    assert [(p.key, p.captions) for p in pairs] == [("7", ["one", "two"]), ("9", ["x"])]
    karpathy = {
        "images": [
            {
                "filepath": "images",
                "filename": "train_000000.png",
                "split": "train",
                "cocoid": 1,
                "sentences": [{"raw": "a"}],
            },
            {
                "filepath": "images",
                "filename": "train_000001.png",
                "split": "restval",
                "cocoid": 2,
                "sentences": [{"raw": "b"}],
            },
            {
                "filepath": "images",
                "filename": "train_000002.png",
                "split": "test",
                "cocoid": 3,
                "sentences": [{"raw": "c"}],
            },
        ]
    }
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    train = read_karpathy(tmp_path / "dataset_coco.json", shapes_folder, ["train", "restval"])
    assert [p.captions for p in train] == [["a"], ["b"]] and len(clean(train, "karpathy")) == 2
    with pytest.raises(DataError, match="unknown Karpathy split"):
        read_karpathy(tmp_path / "dataset_coco.json", shapes_folder, ["dev"])


def test_coco_null_captions_are_dropped(tmp_path):
    """A `"caption": null` annotation is no reference (it once became a None among the image's captions)."""
    coco = {
        "images": [{"id": 7, "file_name": "a.png"}],
        "annotations": [{"image_id": 7, "caption": None}, {"image_id": 7, "caption": "one"}],
    }
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    assert [p.captions for p in read_coco(tmp_path / "captions.json", tmp_path)] == [["one"]]


def test_corrupt_images_are_skipped_counted_and_named(shapes_folder, tokenizer):
    (shapes_folder / "images/train_000003.png").write_bytes(b"garbage")
    pairs = read_imagefolder(shapes_folder)
    ds = PairsDataset(pairs, lambda im: torch.zeros(3, 4, 4), train=True)
    failures = DecodeFailures(max_rate=0.5, min_seen=1)
    collate = CaptionCollator(tokenizer, 40, failures)
    with pytest.warns(UserWarning, match="train_000003.png"):
        batch = collate([ds[i] for i in range(12)])
    assert batch["images"].shape[0] == 11 and failures.failed == 1
    strict = CaptionCollator(tokenizer, 40, DecodeFailures(max_rate=0.05, min_seen=1))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="1 of 4 examples could not be read"):
        strict([ds[i] for i in range(4)])


def test_overlong_captions_keep_eos(tokenizer):
    collate = CaptionCollator(tokenizer, 8)
    ex = {"image": torch.zeros(3, 2, 2), "caption": "a very long caption " * 10, "index": 0, "references": []}
    ids = collate([ex])["input_ids"][0]
    assert len(ids) == 8 and ids[-1] == tokenizer.eos_id


def test_datamodule_checks_before_training(shapes_folder):
    (shapes_folder / "images/train_000005.png").unlink()
    with pytest.raises(DataError, match="1 of 12 image file"):
        PairsDataModule(format="imagefolder", train=str(shapes_folder))
    dm = PairsDataModule(
        format="imagefolder", train=str(shapes_folder), images=ImageChecks(drop_missing=True), split=Split(0.2)
    )
    assert len(dm.pairs()["train"]) + len(dm.pairs()["val"]) == 11 and dm.pairs()["val"]


def _table(tmp_path, names):
    table = tmp_path / "data" / "pairs.jsonl"
    table.parent.mkdir(exist_ok=True)
    table.write_text("".join(json.dumps({"file_name": n, "text": "a caption"}) + "\n" for n in names))
    return table


def test_paths_outside_the_data_root_are_refused(tmp_path):
    from captioner.data.sources import DataSource

    (tmp_path / "data").mkdir()
    make_scene("train", 0).image.save(tmp_path / "data" / "ok.png")
    outside = tmp_path / "secret.png"
    make_scene("train", 1).image.save(outside)
    (tmp_path / "data" / "link.png").symlink_to(outside)
    table = _table(tmp_path, ["ok.png", "../secret.png", str(outside), "link.png"])
    with pytest.raises(DataError, match=r"3 of 4 image path\(s\) lie outside the data root .*allow_outside_root"):
        DataSource("table").read(table)
    assert len(DataSource("table", allow_outside_root=True).read(table)) == 4  # the user means it


def test_the_cli_refuses_them_before_training(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    table = _table(tmp_path, ["../../../../etc/passwd"])
    assert main(["shards", str(tmp_path / "s/%05d.tar"), "--format", "table", "--input", str(table)]) == 2
    assert "lie outside the data root" in capsys.readouterr().err and not (tmp_path / "s").exists()
    with pytest.raises(DataError, match="outside the data root"):
        PairsDataModule(format="table", train=str(table))


def test_shards_hold_only_what_decodes_as_an_image(shapes_folder, tmp_path, capsys):
    (shapes_folder / "images/train_000003.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["shards", str(tmp_path / "s/%05d.tar"), "--input", str(shapes_folder)]) == 0
    captured = capsys.readouterr()
    assert "wrote 11 samples" in captured.out and "left out 1 file(s)" in captured.err
    samples = list(wds.WebDataset(str(tmp_path / "s/00000.tar"), shardshuffle=False, empty_check=False))
    assert len(samples) == 11 and all(b"root:x" not in s["png"] for s in samples)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_a_val_fraction_outside_zero_one_names_the_option(fraction, shapes_folder):
    with pytest.raises(DataError, match="val_fraction=.*between 0 and 1"):
        PairsDataModule(train=str(shapes_folder), split=Split(val_fraction=fraction))
