"""Running over files from Python: `caption_files` with a `RunOptions`, called with keywords, writes the rows the
command writes; its options are checked as the declarations say, naming the argument."""

import inspect
import json

import pytest

from captioner.cli import main
from captioner.errors import ArgumentError
from captioner.model import Captioner
from captioner.runs import RunOptions, caption_files
from captioner.shapes import make_scene


def test_caption_files_takes_keywords_and_writes_the_commands_rows(trained_package, tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        make_scene("test", i).image.save(paths[-1])
    by_command = tmp_path / "command.jsonl"
    assert main(["caption", str(trained_package), *paths, "-o", str(by_command), "--workers", "0"]) == 0
    model, tok = Captioner.from_pretrained(trained_package)
    out = tmp_path / "python.jsonl"
    options = RunOptions(batch_size=2, workers=0, progress=False)
    run = caption_files(model, tok, paths, output=out, options=options)
    assert (run.captioned, run.failed, run.skipped) == (3, 0, 0)
    assert out.read_text() == by_command.read_text()
    resumed = caption_files(model, tok, paths, output=out, options=RunOptions(workers=0, resume=True, progress=False))
    assert resumed.skipped == 3 and [json.loads(line)["path"] for line in out.read_text().splitlines()] == paths


def test_everything_after_the_paths_is_a_keyword():
    params = list(inspect.signature(caption_files).parameters.values())
    assert [p.name for p in params[:3]] == ["model", "tokenizer", "paths"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[3:])


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"batch_size": 0}, "batch_size=0: must be between 1"),
        ({"workers": -1}, "workers=-1: must be between 0"),
        ({"precision": "8"}, "precision='8': must be one of"),
    ],
)
def test_run_options_name_the_bad_argument(options, says, tiny_model, tokenizer):
    with pytest.raises(ArgumentError, match=says) as refused:
        caption_files(tiny_model, tokenizer, [], options=RunOptions(**options))
    assert "--" not in str(refused.value)
