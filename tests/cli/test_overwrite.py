"""No command destroys what it did not write: an output that is, holds or lies inside an input is refused in one
line (exit 2) with the input untouched, also with --overwrite; shards check every name before writing the first."""

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from captioner.cli import main
from captioner.outputs import OutputError, check_apart
from captioner.shapes import make_scene, write_imagefolder
from tests.cli.test_errors import one_line_error


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def package(trained_package, tmp_path) -> Path:
    return Path(shutil.copytree(trained_package, tmp_path / "pkg"))


def test_check_apart_names_is_inside_and_holds(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    for out, where in ((tmp_path / "in", "is"), (tmp_path / "link" / "new.jsonl", "lies inside"), (tmp_path, "holds")):
        with pytest.raises(OutputError, match=f"-o {out} {where} the input"):
            check_apart([out], [tmp_path / "in"], "-o")
    check_apart([tmp_path / "out.jsonl", tmp_path / "in2"], [tmp_path / "in"], "-o")  # apart: fine


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_export_hf_never_replaces_the_package_it_reads(package, where, capsys):
    before = digest(package.parent)
    out = {"same": package, "inside": package / "hf", "parent": package.parent}[where]
    assert main(["export-hf", str(package), str(out), "--overwrite"]) == 2
    assert "the input" in one_line_error(capsys)
    assert digest(package.parent) == before


def test_caption_refuses_an_output_among_its_inputs(package, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_scene("test", 0).image.save(folder / "a.png")
    listing = tmp_path / "list.jsonl"
    listing.write_text(f"{folder / 'a.png'}\n")
    before = digest(tmp_path)
    cases = [
        [str(folder), "-o", str(folder / "captions.jsonl")],
        ["--list", str(listing), "-o", str(listing)],
        [str(folder), "-o", str(package / "captions.jsonl")],
        [str(folder), "--attention-maps", str(folder)],
    ]
    for args in cases:
        assert main(["caption", str(package), *args, "--overwrite", "--workers", "0"]) == 2, args
        assert "the input" in one_line_error(capsys)
    assert digest(tmp_path) == before


def test_evaluate_refuses_a_report_inside_the_package(package, capsys):
    before = digest(package)
    assert (
        main(["evaluate", str(package), "--count", "2", "--report", str(package / "config.json"), "--overwrite"]) == 2
    )
    assert "lies inside the input" in one_line_error(capsys)
    assert digest(package) == before


def test_shards_check_every_name_before_writing(shapes_folder, tmp_path, capsys):
    out = tmp_path / "shards"
    out.mkdir()
    for n in (1, 2):  # no 00000.tar: only the first name was checked before
        (out / f"{n:05d}.tar").write_bytes(b"mine")
    args = ["shards", str(out / "%05d.tar"), "--input", str(shapes_folder), "--max-count", "4"]
    assert main(args) == 2
    assert "2 of the shard names to write exist already" in one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["00001.tar", "00002.tar"]
    assert all(p.read_bytes() == b"mine" for p in out.iterdir())
    assert main([*args, "--overwrite"]) == 0  # asked for: replaced, and nothing else left behind
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "00001.tar", "00002.tar"]


@pytest.mark.parametrize("pattern", ["%d%d.tar", "%%.tar", "%d/%d.tar", "plain.tar", "%s.tar", "%05x.tar"])
def test_a_bad_shard_pattern_is_one_line(shapes_folder, tmp_path, capsys, pattern):
    assert main(["shards", str(tmp_path / "out" / pattern), "--input", str(shapes_folder)]) == 2
    assert "shard pattern" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_shards_inside_the_input_folder_are_refused(shapes_folder, capsys):
    before = digest(shapes_folder)
    assert main(["shards", str(shapes_folder / "%05d.tar"), "--input", str(shapes_folder)]) == 2
    assert "lies inside the input" in one_line_error(capsys)
    assert digest(shapes_folder) == before


def test_a_failed_shards_run_leaves_no_half_shard(shapes_folder, tmp_path, capsys):
    (shapes_folder / "images" / "notes.txt").write_text("not an image")
    meta = shapes_folder / "metadata.jsonl"
    meta.write_text(meta.read_text() + '{"file_name": "images/notes.txt", "text": "a caption"}\n')
    assert main(["shards", str(tmp_path / "out/%05d.tar"), "--input", str(shapes_folder), "--max-count", "5"]) == 2
    assert "jpg, png or webp" in one_line_error(capsys)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.tar", "00001.tar"]  # the complete ones


def test_shapes_overwrite_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metadata.jsonl").write_text('{"file_name": "cat.jpg", "text": "my cat"}\n')
    before = digest(mine)
    assert main(["shapes", str(mine), "--count", "2", "--overwrite"]) == 2
    assert "is not the metadata of shapes scenes" in one_line_error(capsys)
    assert digest(mine) == before
    write_imagefolder(tmp_path / "scenes", "train", 2)
    assert main(["shapes", str(tmp_path / "scenes"), "--count", "3", "--overwrite"]) == 0  # its own: replaced


def test_fit_never_exports_over_the_package_it_starts_from(package):
    from captioner.train.callbacks import ExportModelPackage

    trainer = SimpleNamespace(
        is_global_zero=True,
        log_dir=str(package.parent),
        default_root_dir=".",
        datamodule=SimpleNamespace(describe=dict),
    )
    module = SimpleNamespace(package=package)  # the folder `connect` resolved from init_from
    with pytest.raises(OutputError, match="ExportModelPackage dirpath .* is the input"):
        ExportModelPackage(dirpath=str(package), overwrite=True).on_fit_start(trainer, module)
    ExportModelPackage(dirpath=str(package.parent / "new"), overwrite=True).on_fit_start(trainer, module)


def test_fit_never_exports_over_shards_read_by_a_pattern_or_the_data_root(tmp_path):
    from captioner.train.callbacks import ExportModelPackage

    (tmp_path / "shards").mkdir()
    (tmp_path / "images").mkdir()
    data = {"train": str(tmp_path / "shards/{000..009}.tar"), "val": None, "root": str(tmp_path / "images")}
    for rank_zero in (True, False):  # every rank stops, so that none waits for the others under DDP
        trainer = SimpleNamespace(
            is_global_zero=rank_zero,
            log_dir=str(tmp_path),
            default_root_dir=".",
            datamodule=SimpleNamespace(describe=lambda: data),
        )
        for folder in ("shards", "images"):
            with pytest.raises(OutputError, match=f"dirpath {tmp_path / folder} is the input"):
                ExportModelPackage(dirpath=str(tmp_path / folder), overwrite=True).on_fit_start(
                    trainer, SimpleNamespace(hparams={})
                )
