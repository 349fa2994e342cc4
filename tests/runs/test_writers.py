"""`caption --resume` never loses a user's data: foreign files are refused untouched, a run holds a lock on its
output, a record cut by a kill is removed by parsing (JSON, CSV quoting), never by splitting lines."""

import csv
import io
import json

import pytest

from captioner.cli import main
from captioner.runs.writers import OutputWriter
from captioner.shapes import make_scene, write_imagefolder


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        make_scene("test", i).image.save(folder / f"{i}.png")
    return folder


def caption(package, inputs, out, *extra):
    return main(["caption", str(package), *map(str, inputs), "-o", str(out), "--workers", "0", *extra])


def test_resume_refuses_a_file_it_did_not_write(trained_package, images, tmp_path, capsys):
    folder = write_imagefolder(tmp_path / "user", "train", 2)
    metadata = folder / "metadata.jsonl"
    before = metadata.read_bytes()
    assert caption(trained_package, [images], metadata, "--resume") == 2
    err = capsys.readouterr().err
    assert "captioner: error:" in err and "line 1 is not a row" in err and str(metadata) in err
    assert metadata.read_bytes() == before  # untouched


@pytest.mark.parametrize(
    "text",
    ["image,caption\nphoto.jpg,a dog", "image,caption\na.jpg,one\nb.jpg,two\nc.jpg,three\n", "path,caption\nx,y\n"],
    ids=["one-row-no-newline", "several-rows", "other-columns"],
)
def test_resume_refuses_a_foreign_csv_untouched(text, trained_package, images, tmp_path):
    out = tmp_path / "user.csv"
    out.write_text(text)
    assert caption(trained_package, [images], out, "--resume") == 2
    assert out.read_text() == text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_a_second_run_on_the_same_output_refuses(images, tmp_path, trained_package, capsys):
    out = tmp_path / "rows.jsonl"
    holder = OutputWriter(out, resume=False)  # a first run, still writing
    try:
        holder.write([{"path": "a.png", "caption": "x", "score": -1.0}])
        assert caption(trained_package, [images], out, "--resume") == 2
        assert "being written by another captioner run" in capsys.readouterr().err
    finally:
        holder.close()
    assert caption(trained_package, [images], out, "--resume") == 0  # the lock went with the first run
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()][0] == "a.png"


def test_a_jsonl_row_cut_by_a_kill_is_redone(trained_package, images, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert caption(trained_package, [images], out) == 0
    lines = out.read_bytes().split(b"\n")
    out.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:15])  # killed inside row 3
    assert caption(trained_package, [images], out, "--resume") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(images / f"{i}.png") for i in range(3))


def test_a_csv_record_cut_inside_a_quoted_line_break_is_redone(tmp_path):
    out = tmp_path / "rows.csv"
    writer = OutputWriter(out, resume=False)
    writer.write([{"path": "a.png", "caption": "one,\nline two", "score": 1}, {"path": "b.png", "caption": "b"}])
    writer.write([{"path": "new", "caption": "cut\nafter this break", "score": 2}])
    writer.close()
    data = out.read_bytes()
    out.write_bytes(data[: data.index(b"cut\n") + 4])  # the kill came right after the embedded line break
    resumed = OutputWriter(out, resume=True)
    assert resumed.done == {"a.png", "b.png"}  # not 'new\ncap...' glued from two records
    resumed.write([{"path": "new", "caption": "again"}])
    resumed.close()
    rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
    assert [r["path"] for r in rows] == ["a.png", "b.png", "new"] and rows[0]["caption"] == "one,\nline two"


def test_paths_with_unicode_line_separators_are_kept(tmp_path):
    out = tmp_path / "rows.jsonl"
    odd = ["a\u2028b.png", "c\u0085d.png", "e\x0bf\x0cg\x1ch.png"]
    writer = OutputWriter(out, resume=False)
    writer.write([{"path": p, "caption": "x"} for p in odd])
    writer.close()
    resumed = OutputWriter(out, resume=True)
    resumed.close()
    assert resumed.done == set(odd)
