"""`captioner caption` at scale: every file gets a row, output is incremental and resumable, maps are written."""

import csv
import io
import json

import pytest
import torch
from PIL import Image

from captioner.cli import main
from captioner.shapes.scenes import make_scene


@pytest.fixture
def mixed_folder(tmp_path):
    """4 good images (PNG, JPEG, CMYK JPEG, nested), a truncated JPEG, a text file named .png, a README."""
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    make_scene("test", 0).image.save(root / "a.png")
    make_scene("test", 1).image.save(root / "b.jpg", quality=90)
    make_scene("test", 2).image.convert("CMYK").save(root / "c_cmyk.jpg")
    make_scene("test", 3).image.save(root / "sub" / "d.png")
    buf = io.BytesIO()
    make_scene("test", 4).image.save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (root / "not_an_image.png").write_text("hello")
    (root / "README.txt").write_text("notes")
    return root


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_with_bad_files_finishes_with_one_row_per_file(trained_package, mixed_folder, tmp_path):
    out = tmp_path / "captions.jsonl"
    code = main(
        ["caption", str(trained_package), str(mixed_folder), "-o", str(out), "--workers", "2", "--batch-size", "3"]
    )
    assert code == 1  # some files failed
    got = {r["path"].split("mixed/")[1]: r for r in rows(out)}
    assert len(got) == 7
    good = {"a.png", "b.jpg", "c_cmyk.jpg", "sub/d.png"}
    assert all(isinstance(got[k]["caption"], str) and "error" not in got[k] for k in good)
    assert all("error" in got[k] for k in set(got) - good)
    assert "cannot decode" in got["truncated.jpg"]["error"] or "truncated" in got["truncated.jpg"]["error"]


def test_resume_after_a_kill_and_no_overwrite(trained_package, mixed_folder, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    args = ["caption", str(trained_package), str(mixed_folder), "-o", str(out), "--workers", "0"]
    main(args)
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:3]) + "\n" + full[3][:10])  # killed halfway through writing row 4
    assert main(args) == 2 and "exists" in capsys.readouterr().err  # never overwritten silently
    main([*args, "--resume"])
    again = rows(out)
    assert sorted(r["path"] for r in again) == sorted(json.loads(line)["path"] for line in full)
    assert "skipped 3" in capsys.readouterr().err


def test_csv_output_glob_and_list_inputs(trained_package, mixed_folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{mixed_folder / 'a.png'}\n{mixed_folder / 'b.jpg'}\n")
    out = tmp_path / "out.csv"
    code = main(
        [
            "caption",
            str(trained_package),
            str(mixed_folder / "sub" / "*.png"),
            "--list",
            str(listing),
            "-o",
            str(out),
            "--workers",
            "0",
            "--num-beams",
            "2",
            "--num-return-sequences",
            "2",
        ]
    )
    assert code == 0
    table = list(csv.DictReader(out.read_text().splitlines()))
    assert [r["path"].split("/")[-1] for r in table] == ["a.png", "b.jpg", "d.png"]
    assert all(len(json.loads(r["n_best"])) == 2 and r["error"] == "" for r in table)


def test_decompression_bomb_gets_an_error_row(trained_package, tmp_path, capsys):
    Image.new("L", (300, 300)).save(tmp_path / "big.png")
    args = ["caption", str(trained_package), str(tmp_path / "big.png"), "--max-image-pixels", "10000"]
    assert main([*args, "--workers", "0"]) == 1
    assert "pixel limit" in capsys.readouterr().out


def test_attention_maps_written_and_returned(trained_package, mixed_folder, tmp_path):
    maps_dir, out = tmp_path / "maps", tmp_path / "c.jsonl"
    main(
        [
            "caption",
            str(trained_package),
            str(mixed_folder / "a.png"),
            "--attention-maps",
            str(maps_dir),
            "--workers",
            "0",
            "-o",
            str(out),
        ]
    )
    (png,) = maps_dir.glob("a.*.attention.png")
    n_words = len(rows(out)[0]["caption"].split())
    with Image.open(png) as figure:
        assert figure.size[0] == 128 * min(6, 1 + n_words)  # the image + a panel per word

    from captioner.model import Captioner
    from captioner.viz import cross_attention_maps

    model, tok = Captioner.from_pretrained(trained_package)
    image = model.preprocessing.eval_transform()(make_scene("test", 0).image)[None]
    maps = cross_attention_maps(model, image, [[5, 6, 7]], tok.bos_id)
    assert maps[0].shape == (3, 4, 4)  # 3 tokens over the 4x4 patch grid of the tiny model
    assert torch.allclose(maps[0].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    mean_layers = cross_attention_maps(model, image, [[5, 6, 7]], tok.bos_id, layer=None)
    assert mean_layers[0].shape == (3, 4, 4)


@pytest.mark.slow  # two evaluations, each with the Java scorers (about 13 s)
def test_evaluate_shapes_report_and_imagefolder(trained_package, tmp_path, capsys):
    from captioner.shapes.scenes import write_imagefolder

    report = tmp_path / "report.json"
    assert main(["evaluate", str(trained_package), "--count", "8", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert {"BLEU-4", "ROUGE-L", "CIDEr-D", "exact_match"} <= set(data["metrics"])
    assert data["decoding"]["num_beams"] == 1 and data["data"]["format"] == "shapes"
    folder = write_imagefolder(tmp_path / "folder", "test", 6)
    out = tmp_path / "preds.jsonl"
    args = ["evaluate", str(trained_package), "--data-format", "imagefolder", "--data", str(folder), "-o", str(out)]
    assert main([*args, "--workers", "0"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["count"] == 6 and "CIDEr-D" in metrics
    assert all(len(r["references"]) == 4 for r in rows(out))


@pytest.mark.slow  # a training with the Java scorers at every validation (about 10 s)
def test_caption_metrics_logged_during_validation(tmp_path):
    from tests.helpers import ROOT, TINY_MODEL

    runs = tmp_path / "runs"
    args = [
        *TINY_MODEL,
        "--model.validation.caption_metrics_every_n_epochs=1",
        "--data.init_args.train_size=16",
        "--data.init_args.val_size=8",
        "--data.init_args.batch_size=8",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        f"--trainer.logger.init_args.save_dir={runs}",
    ]
    assert main(["fit", "--config", str(ROOT / "configs/shapes.yaml"), *args]) == 0
    header = next(runs.glob("shapes/version_*/metrics.csv")).read_text().splitlines()[0]
    assert "val/CIDEr-D" in header and "val/BLEU-4" in header
