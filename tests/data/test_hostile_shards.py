"""Hostile webdataset shards: a bad member becomes an error row naming the shard and the key, a damaged tar is
named once and the rest is read, and training stops only past max_failure_rate."""

import io
import os
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from captioner.data.collate import CaptionCollator, DecodeFailures
from captioner.data.shards import shard_dataset
from captioner.data.tables import DataError
from captioner.tokenizer import CaptionTokenizer


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def good(key: str) -> list[tuple[str, bytes]]:
    return [(f"{key}.png", png()), (f"{key}.txt", f"a red square {key}".encode())]


def read(pattern: str) -> tuple[list[dict], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ResourceWarning)  # webdataset leaves its tar files to the collector
        rows = list(shard_dataset(pattern, lambda im: torch.zeros(3, 2, 2), train=False))
    return rows, [str(w.message) for w in caught]


def test_bad_members_become_error_rows_naming_shard_and_key(tmp_path):
    shard = tmp_path / "bad.tar"
    write_tar(
        shard,
        good("a")
        + [("deep.png", png()), ("deep.json", b"[" * 100_000 + b"]" * 100_000)]
        + [("binary.png", png()), ("binary.txt", b"\xff\xfe\x00\x81")]
        + [("digits.png", png()), ("digits.json", b'{"caption": ' + b"9" * 100_000 + b"}")]
        + [("list.png", png()), ("list.json", b"[1, 2]")]
        + good("z"),
    )
    rows, said = read(str(shard))
    ok = [r for r in rows if "error" not in r]
    assert [r["caption"] for r in ok] == ["a red square a", "a red square z"]
    errors = {r["path"].split("sample ")[1]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"'deep'", "'binary'", "'digits'", "'list'"}
    for key, error in errors.items():
        assert error.startswith(f"shard {shard}, sample {key}: ")
    assert "not readable JSON (RecursionError)" in errors["'deep'"]
    assert "not UTF-8" in errors["'binary'"]
    assert "not readable JSON (ValueError)" in errors["'digits'"]
    assert "a JSON list, not an object" in errors["'list'"]
    assert said == []


def test_a_duplicate_member_is_named_once_with_its_shard(tmp_path):
    shard = tmp_path / "dup.tar"
    write_tar(shard, good("a") + [("a.txt", b"again")] + good("b"))
    rows, said = read(str(shard))
    assert len(said) == 1 and str(shard) in said[0] and "damaged" in said[0]
    assert "('" not in said[0]  # not webdataset's raw argument tuple
    assert any(r.get("caption") == "a red square b" for r in rows)


def test_random_bytes_and_truncated_tars_are_named_once_and_the_rest_is_read(tmp_path):
    write_tar(tmp_path / "0.tar", good("a") + good("b"))
    (tmp_path / "1.tar").write_bytes(os.urandom(20_000))
    full = tmp_path / "full.tar"
    write_tar(full, good("c") + good("d") + good("e") + [("f.png", png() * 50), ("f.txt", b"x")])
    with tarfile.open(full) as tar:
        f_png = tar.getmember("f.png")
        cut = f_png.offset_data + f_png.size // 2
    (tmp_path / "2.tar").write_bytes(full.read_bytes()[:cut])  # cut inside f.png
    rows, said = read(str(tmp_path / "{0..2}.tar"))
    captions = [r["caption"] for r in rows if "error" not in r]
    assert captions[:2] == ["a red square a", "a red square b"]
    assert {"a red square c", "a red square d", "a red square e"} <= set(captions)
    named = sorted(m for m in said if "webdataset shard" in m)
    assert len(named) == 2, said
    assert str(tmp_path / "1.tar") in named[0] and str(tmp_path / "2.tar") in named[1]


def test_error_rows_are_counted_and_stop_only_past_the_rate(tmp_path):
    shard = tmp_path / "mixed.tar"
    members = []
    for i in range(20):
        members += good(f"k{i:02d}")
    members += [("bad.png", png()), ("bad.json", b"{")]
    write_tar(shard, members)
    rows, _ = read(str(shard))
    tokenizer = CaptionTokenizer.train([r["caption"] for r in rows if "error" not in r] * 5, vocab_size=300)

    lenient = CaptionCollator(tokenizer, 16, DecodeFailures(max_rate=0.1, min_seen=1))
    with pytest.warns(UserWarning, match=f"could not be read: shard {shard}, sample 'bad'"):
        batch = lenient(rows)
    assert batch["input_ids"].shape[0] == 20 and lenient.failures.failed == 1

    strict = CaptionCollator(tokenizer, 16, DecodeFailures(max_rate=0.01, min_seen=1))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="1 of 21 examples could not be read.*'bad'"):
        strict(rows)
