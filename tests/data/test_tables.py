"""Metadata read as written, or refused with a DataError naming the line: never another exception, never a hang."""

import json
import random
import string

import pytest

from captioner.data.sources import DataError, read_table


def table(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_unicode_line_separators_stay_inside_values(tmp_path):
    odd = "a\u2028b\u0085c\x0bd\x0ce\x1cf"
    jsonl = table(tmp_path, "m.jsonl", json.dumps({"file_name": "x.png", "text": odd}, ensure_ascii=False) + "\n")
    assert read_table(jsonl)[0].captions == [odd]
    csv_text = f'file_name,text\nx.png,"{odd}"\ny.png,second\n'
    assert [p.captions for p in read_table(table(tmp_path, "m.csv", csv_text))] == [[odd], ["second"]]


def test_doubled_csv_columns_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"column\(s\) \['text'\] more than once"):
        read_table(table(tmp_path, "m.csv", "file_name,text,text\nx.png,a,b\n"))


@pytest.mark.parametrize("value", [5, True, {"en": "a cat"}, [["nested"]], 1.5])
def test_captions_that_are_not_text_are_refused(value, tmp_path):
    path = table(tmp_path, "m.jsonl", json.dumps({"file_name": "x.png", "text": value}) + "\n")
    with pytest.raises(DataError, match=r"line 1: 'text' is .* a caption is a string or a list of strings"):
        read_table(path)


def test_null_captions_are_counted(tmp_path, caplog):
    rows = [{"file_name": "x.png", "text": None}, {"file_name": "y.png", "text": ["a", None]}]
    pairs = read_table(table(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    assert [p.captions for p in pairs] == [[], ["a"]] and "dropped 2 null caption(s)" in caplog.text


@pytest.mark.parametrize("line", ["5", '"str"', "null", "[1, 2]"])
def test_json_lines_that_are_not_objects_are_refused(line, tmp_path):
    with pytest.raises(DataError, match="line 2 is a JSON .*not an object"):
        read_table(table(tmp_path, "m.jsonl", '{"file_name": "x.png", "text": "a"}\n' + line + "\n"))


VALUES = [
    None,
    True,
    0,
    -1.5,
    "",
    "x.png",
    "a caption",
    "\u2028",
    "\x00",
    "é漢😀",
    [],
    ["a"],
    [None],
    [[1]],
    {},
    {"a": 1},
]


def random_jsonl(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 6)):
        kind = rng.random()
        if kind < 0.4:
            keys = rng.sample(["file_name", "text", "other", ""], rng.randint(0, 3))
            lines.append(json.dumps({k: rng.choice(VALUES) for k in keys}, ensure_ascii=rng.random() < 0.5))
        elif kind < 0.6:
            lines.append(json.dumps(rng.choice(VALUES)))
        elif kind < 0.8:
            lines.append("".join(rng.choice(string.printable + '\u2028\x85{}[]",:') for _ in range(rng.randint(0, 30))))
        else:
            lines.append('{"file_name": "x.png", "text": ' + "[" * rng.randint(1, 3000))
    data = "\n".join(lines).encode()
    return data if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))


def random_csv(rng: random.Random) -> bytes:
    cells = ["file_name", "text", "x.png", "a, b", '"quoted', 'a ""b""', "\n", "\r\n", "\u2028", "é", "", "\x00"]
    rows = [",".join(rng.choice(cells) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 6))]
    data = "\n".join(rows).encode()
    return data if rng.random() < 0.8 else bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_fuzz_every_input_reads_or_is_a_data_error(suffix, tmp_path):
    rng = random.Random(f"fuzz-{suffix}")
    make = random_jsonl if suffix == "jsonl" else random_csv
    outcomes = {"read": 0, "refused": 0}
    for i in range(400):
        path = table(tmp_path, f"{i}.{suffix}", make(rng))
        try:
            pairs = read_table(path)
        except DataError:
            outcomes["refused"] += 1
            continue
        assert all(isinstance(c, str) for p in pairs for c in p.captions)
        outcomes["read"] += 1
    assert outcomes["read"] > 20 and outcomes["refused"] > 20  # both sides of the reader were exercised
