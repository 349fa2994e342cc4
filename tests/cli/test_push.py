"""`captioner push --dry-run`: the files it would upload and a model card huggingface_hub parses back."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from captioner.cli import main


@pytest.mark.slow  # a fresh process or a Java scorer: several seconds
def test_dry_run_lists_the_package_and_prints_a_card_with_the_report(trained_package, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(["evaluate", str(trained_package), "--count", "4", "--workers", "0", "--report", str(report)]) == 0
    metrics = json.loads(report.read_text())["metrics"]
    capsys.readouterr()
    assert (
        main(["push", str(trained_package), "acme/tiny", "--report", str(report), "--license", "mit", "--dry-run"]) == 0
    )
    out = capsys.readouterr()
    listed = [line.split()[0] for line in out.err.splitlines()[1:]]
    assert listed == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "special_tokens.json",
        "training.json",
        "README.md",
    ]
    card = ModelCard(out.out)  # huggingface_hub's own parser: YAML front matter and the model-index
    assert card.data.library_name == "captioner" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.license == "mit" and "image-captioning" in card.data.tags
    found = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert found["exact_match"] == metrics["exact_match"] and found["CIDEr-D"] == pytest.approx(metrics["CIDEr-D"])
    assert "count" not in found and {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert "captioner caption acme/tiny photo.jpg" in card.text and "optimiser steps on `shapes` data" in card.text


def test_a_card_without_a_report_says_so(trained_package, capsys):
    assert main(["push", str(trained_package), "acme/tiny", "--dry-run"]) == 0
    card = ModelCard(capsys.readouterr().out)
    assert card.data.eval_results is None and "Not evaluated" in card.text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{tmp}", "acme/tiny"], "is not a captioner model package: config.json is missing"),
        (["{package}", "tiny"], "is not a Hub repo id; give org/name"),
        (["{package}", "acme/tiny", "--report", "{tmp}/none.json"], "--report"),
        (["{package}", "acme/tiny", "--report", "{tmp}/bad.json"], "no metrics"),
    ],
)
def test_push_refuses_bad_input_in_one_line(trained_package, tmp_path, capsys, args, says):
    (tmp_path / "bad.json").write_text('{"model": "x"}')
    argv = [a.format(tmp=tmp_path, package=trained_package) for a in args]
    assert main(["push", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and says in err and "\n" not in err


def test_push_never_uploads_a_file_a_link_leads_to_outside_the_package(trained_package, tmp_path, capsys):
    import shutil

    package = Path(shutil.copytree(trained_package, tmp_path / "pkg"))
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    (package / "training.json").unlink()
    (package / "training.json").symlink_to(secret)
    assert main(["push", str(package), "acme/tiny", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and "outside the package" in err and "\n" not in err
