"""The model card says how the package was made: objective, the package it started from, the optimiser."""

import json

from huggingface_hub import ModelCard

from captioner.card import model_card
from captioner.package import TRAINING_FILE, Objective, Origin, TrainingInfo


def test_the_card_shows_the_objective_the_start_and_the_optimiser(tiny_model, tokenizer, tmp_path):
    info = TrainingInfo(
        steps=4,
        data={"source": "shapes"},
        objective=Objective("scst", reward="CIDEr-D", baseline="greedy", samples=3),
        started_from=Origin(repo_id="acme/base", revision="v1", commit="0123abcd"),
        optimizer={"lr": 1e-05, "warmup_steps": 20, "finetune": "full"},
    )
    package = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer, training=info)
    card = ModelCard(model_card(package, "acme/scst"))
    assert "objective: SCST, self-critical sequence training: reward CIDEr-D, baseline greedy, 3 sampled" in card.text
    assert (
        "started from: the model package [acme/base](https://huggingface.co/acme/base) at revision `v1` " in card.text
    )
    assert "(commit `0123abcd`)" in card.text
    assert "optimiser settings: lr 1e-05, warmup_steps 20, finetune full" in card.text
    assert card.data.base_model == "acme/base"  # the Hub's fine-tune link


def test_the_card_of_a_run_from_scratch_and_of_an_older_package(tiny_model, tokenizer, tmp_path):
    info = TrainingInfo(steps=4, objective=Objective(), optimizer={"lr": 0.002})
    package = tiny_model.save_pretrained(tmp_path / "pkg", tokenizer, training=info)
    text = ModelCard(model_card(package, "acme/tiny")).text
    assert "objective: cross-entropy" in text and "started from: no package: random weights" in text
    (package / TRAINING_FILE).write_text(json.dumps({"steps": 4, "data": {"source": "shapes"}}))  # as written before
    text = ModelCard(model_card(package, "acme/tiny")).text
    assert "4 optimiser steps on `shapes` data" in text and "not recorded (trained by an older captioner)" in text
    (package / TRAINING_FILE).unlink()
    assert "The package records no training.json." in ModelCard(model_card(package, "acme/tiny")).text
