"""Recaptioning shards (`captioner caption SHARDS --output FOLDER`, `captioner.runs.shards`): one parquet file per
input shard with every key once and the captions `captioner.caption` gives for the same images; resume, retries,
error rows, the readers that must read the output, and the mistakes refused in one line."""

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from captioner import caption
from captioner.cli import main
from captioner.generate import GenerationConfig
from captioner.model import Captioner
from captioner.runs.files import RunOptions
from captioner.runs.parquet_rows import COLUMNS, read_metadata
from captioner.runs.shards import caption_shards
from captioner.shapes import make_scene

PER_SHARD = 3
FEW = ["--max-new-tokens", "4"]  # short captions: the tiny package's are cut at the limit anyway, and it is fast


def png(index: int) -> bytes:
    data = io.BytesIO()
    make_scene("test", index).image.save(data, format="PNG")
    return data.getvalue()


def write_tars(folder: Path, count: int) -> list[str]:
    """`count` webdataset shards of PER_SHARD scenes each (KEY.png + KEY.txt), as img2dataset lays them out."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(count):
        paths.append(str(folder / f"{s:05d}.tar"))
        with wds.TarWriter(paths[-1]) as sink:
            for i in range(s * PER_SHARD, (s + 1) * PER_SHARD):
                sink.write({"__key__": f"{i:09d}", "png": png(i), "txt": f"scene {i}"})
    return paths


def write_parquet(path: Path, indices: list[int], column: str = "jpg", struct: bool = False) -> str:
    images = [{"bytes": png(i), "path": None} for i in indices] if struct else [png(i) for i in indices]
    data = {"key": [f"p{i}" for i in indices], column: images, "caption": [f"scene {i}" for i in indices]}
    pq.write_table(pa.table(data), path, row_group_size=3)  # row groups smaller than the file
    return str(path)


@pytest.fixture(scope="module")
def references(trained_package) -> dict[int, str]:
    """What `captioner.caption` says of each scene (fp32 greedy)."""
    scenes = [make_scene("test", i).image for i in range(3 * PER_SHARD)]
    return {i: c.text for i, c in enumerate(caption(scenes, trained_package, generation=GenerationConfig(4)))}


def read(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_tars_and_parquet_give_every_key_once_with_the_captions_of_caption(
    trained_package, references, tmp_path, capsys
):
    write_tars(tmp_path / "shards", 2)
    last = list(range(2 * PER_SHARD, 3 * PER_SHARD))
    table = write_parquet(tmp_path / "p0.parquet", last, column="image", struct=True)
    out = tmp_path / "out"
    args = ["caption", str(trained_package), str(tmp_path / "shards/{00000..00001}.tar"), table]
    assert main([*args, "--output", str(out), "--output-format", "parquet", "--batch-size", "3", *FEW]) == 0
    assert f"captioned 3 ({3 * PER_SHARD} rows, 0 errors), failed 0, skipped 0" in capsys.readouterr().err
    for name, first in (("00000", 0), ("00001", PER_SHARD), ("p0", 2 * PER_SHARD)):
        rows = read(out / f"{name}.parquet")
        indices = range(first, first + PER_SHARD)
        prefix = "p" if name == "p0" else ""
        assert [r["key"] for r in rows] == [f"p{i}" if prefix else f"{i:09d}" for i in indices]
        assert [r["caption"] for r in rows] == [references[i] for i in indices]
        assert [r["original_caption"] for r in rows] == [f"scene {i}" for i in indices]
        assert all(r["error"] is None for r in rows)
        assert all(r["n_best"] == [{"caption": r["caption"], "score": r["score"]}] for r in rows)
        assert json.loads((out / f"{name}.parquet.done").read_text())["rows"] == PER_SHARD
    assert read(out / "00001.parquet")[0]["source"].endswith(f"00001.tar#{PER_SHARD:09d}.png")
    meta = read_metadata(str(out / "p0.parquet"))
    assert meta["model"] == str(trained_package) and meta["generation"]["num_beams"] == 1


@pytest.fixture
def written(trained_package, tmp_path) -> Path:
    """An output shard of two rows, written by the library."""
    model, tok = Captioner.from_pretrained(trained_package)
    shard = write_parquet(tmp_path / "in.parquet", [0, 1])
    options = RunOptions(progress=False)
    caption_shards(model, tok, [shard], tmp_path / "out", generation=GenerationConfig(4), options=options)
    return tmp_path / "out" / "in.parquet"


def test_pandas_and_pyarrow_read_the_documented_schema(written):
    frame = pd.read_parquet(written)
    assert list(frame.columns) == COLUMNS and list(frame["key"]) == ["p0", "p1"]
    assert pq.read_schema(written).field("n_best").type == pa.list_(
        pa.struct([("caption", pa.string()), ("score", pa.float64())])
    )


def test_datasets_loads_the_output(written):
    datasets = pytest.importorskip("datasets")  # not a dependency: checked where it is installed
    loaded = datasets.load_dataset("parquet", data_files=str(written), split="train")
    assert loaded["key"] == ["p0", "p1"] and loaded["caption"] == list(pd.read_parquet(written)["caption"])


def test_resume_runs_only_the_unfinished_shards_and_gives_the_same_outputs(trained_package, tmp_path, capsys):
    pattern = str(tmp_path / "shards/{00000..00002}.tar")
    shards = write_tars(tmp_path / "shards", 3)
    whole, part = tmp_path / "whole", tmp_path / "part"
    model, tok = Captioner.from_pretrained(trained_package)
    for out in (whole, part):
        caption_shards(model, tok, shards, out, generation=GenerationConfig(4), options=RunOptions(progress=False))
    (part / "00001.parquet").unlink()  # stopped halfway: shard 1 never finished, shard 2 lost its marker
    (part / "00001.parquet.done").unlink()
    (part / "00002.parquet.done").unlink()
    assert main(["caption", str(trained_package), pattern, "--output", str(part), "--resume", *FEW]) == 0
    said = capsys.readouterr().err
    assert f"captioned 2 ({2 * PER_SHARD} rows, 0 errors), failed 0, skipped 1 (already done)" in said
    for name in ("00000", "00001", "00002"):
        assert read(part / f"{name}.parquet") == read(whole / f"{name}.parquet")


def test_a_corrupt_image_is_an_error_row_and_its_shard_completes(trained_package, references, tmp_path):
    path = str(tmp_path / "00000.tar")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "good", "png": png(0)})
        sink.write({"__key__": "bad", "jpg": b"\xff\xd8\xff not really a jpeg"})
        sink.write({"__key__": "none", "txt": "a caption without an image"})
    assert main(["caption", str(trained_package), path, "--output", str(tmp_path / "out"), *FEW]) == 0
    rows = read(tmp_path / "out" / "00000.parquet")
    assert [r["key"] for r in rows] == ["good", "bad", "none"]
    assert rows[0]["caption"] == references[0] and rows[0]["error"] is None
    assert "00000.tar#bad.jpg: cannot decode image" in rows[1]["error"] and rows[1]["caption"] is None
    assert "no image member" in rows[2]["error"] and rows[2]["original_caption"] == "a caption without an image"
    assert json.loads((tmp_path / "out" / "00000.parquet.done").read_text())["errors"] == 2


def test_a_truncated_tar_is_retried_then_named_while_the_others_finish(trained_package, tmp_path, capsys):
    paths = write_tars(tmp_path / "shards", 2)
    data = Path(paths[0]).read_bytes()
    Path(paths[0]).write_bytes(data[: len(data) // 2 + 100])  # cut inside a member
    model, tok = Captioner.from_pretrained(trained_package)
    few, options = GenerationConfig(4), RunOptions(progress=False)
    run = caption_shards(model, tok, paths, tmp_path / "api", generation=few, options=options)
    assert list(run.failed) == [paths[0]] and run.done == [paths[1]] and run.retried == 2
    assert not (tmp_path / "api" / "00000.parquet").exists()  # nothing half written
    out = tmp_path / "out"
    assert main(["caption", str(trained_package), *paths, "--output", str(out), "--retries", "0", *FEW]) == 1
    err = capsys.readouterr().err
    assert f"shard {paths[0]} failed" in err and "tried 1 times" in err
    assert len(read(out / "00001.parquet")) == PER_SHARD and not (out / "00000.parquet").exists()


@pytest.mark.parametrize("case", ["format", "nothing", "exists", "no image column", "jsonl output"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    shards = write_tars(tmp_path / "shards", 1) if case in ("format", "exists", "jsonl output") else []
    out = tmp_path / "out"
    extra: list[str] = []
    says = {
        "format": "argument --output-format: invalid choice: 'xml'",
        "nothing": "matches no shard file",
        "exists": "00000.parquet exists; pass --resume",
        "no image column": "no image column (one of jpg, image, png, webp, jpeg); its columns are key, url",
        "jsonl output": "give --output FOLDER",
    }[case]
    if case == "format":
        extra = ["--output-format", "xml"]
    elif case == "nothing":
        shards = [str(tmp_path / "none/{00000..00003}.tar")]
    elif case == "exists":
        out.mkdir()
        (out / "00000.parquet").write_bytes(b"an earlier run's")
    elif case == "no image column":
        shards = [str(tmp_path / "t.parquet")]
        pq.write_table(pa.table({"key": ["a"], "url": ["http://example.com/a.jpg"]}), shards[0])
    else:
        out = tmp_path / "rows.jsonl"
    assert main(["caption", "no-such-package", *shards, "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error:") and len(err.splitlines()) == 1 and says in err


def test_a_webdataset_output_is_the_input_with_the_caption_as_txt(trained_package, references, tmp_path):
    paths = write_tars(tmp_path / "shards", 1)
    out = tmp_path / "out"
    args = ["caption", str(trained_package), *paths, "--output", str(out), "--output-format", "webdataset", *FEW]
    assert main(args) == 0
    written = list(wds.DataPipeline(wds.SimpleShardList([str(out / "00000.tar")]), wds.tarfile_to_samples()))
    assert [s["__key__"] for s in written] == [f"{i:09d}" for i in range(PER_SHARD)]
    assert [s["txt"].decode() for s in written] == [references[i] for i in range(PER_SHARD)]
    assert [s["original.txt"].decode() for s in written] == [f"scene {i}" for i in range(PER_SHARD)]
    assert all(s["png"] == png(i) for i, s in enumerate(written))
    assert main([*args, "--resume"]) == 0 and (out / "00000.tar.done").is_file()
    parquet = str(write_parquet(tmp_path / "p.parquet", [0]))
    assert main(["caption", str(trained_package), parquet, "--output", str(out), "--output-format", "webdataset"]) == 2
