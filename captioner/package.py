"""THE model package: a folder with config.json (the resolved `CaptionerConfig`), model.safetensors (the weights),
tokenizer.json and special_tokens.json (the tokenizer it was trained with, its BOS/EOS/pad ids), and, when `captioner
fit` made it, training.json (how it was made: `TrainingInfo`) and a README.md. This module is the one place that
names those files; it reads a package (each file once, checked before anything is built), writes one atomically,
and knows the older forms:

- one without special_tokens.json (written before it was recorded) reads its special ids from tokenizer.json;

- a config.json without `preprocessing` (exported before it was recorded) is captioned as it was then: timm's data
  config with crop_pct 1.0 and a centre crop (`LEGACY_PREPROCESSING`), with a notice;
- a training.json with only steps, data and used_token_ids (written before the objective, the start package, the
  optimiser and the config were recorded) loads with those fields None.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from captioner.config import CaptionerConfig
from captioner.outputs import atomic_folder
from captioner.tokenizer import CaptionTokenizer
from captioner.weights import Header, check_header, check_shapes, load_checked, rebuild_computed_buffers

log = logging.getLogger(__name__)
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"
TRAINING_FILE, README_FILE = "training.json", "README.md"
SPECIAL_FILE = "special_tokens.json"  # the tokenizer's BOS/EOS/pad ids (`read_tokenizer`)
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)  # what loading needs
PACKAGE_FILES = (*REQUIRED_FILES, SPECIAL_FILE, README_FILE, TRAINING_FILE)  # all a package holds, all read/uploaded
# packages exported before preprocessing was recorded were captioned with timm's config and crop_pct 1.0
LEGACY_PREPROCESSING = {"crop_pct": 1.0, "crop_mode": "center"}


# ---- training.json: how a package was made ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Origin:
    """Where a package came from: a folder here (`path`, absolute), or a Hub repo (`repo_id`) at `revision` (the
    branch, tag or commit asked for), whose snapshot was `commit`."""

    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    @classmethod
    def of(cls, folder: str | Path) -> Origin:
        """What a folder shows by itself: a snapshot in the Hugging Face cache is its repo at that commit."""
        real = Path(os.path.realpath(folder))
        if _snapshot_repo(real) is not None:  # models--org--name/snapshots/<commit>
            repo_id = real.parent.parent.name.removeprefix("models--").replace("--", "/")
            return cls(repo_id=repo_id, revision=real.name, commit=real.name)
        return cls(path=str(real))

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Objective:
    """What training minimised: `cross_entropy` (next-token loss), or `scst` (self-critical training) with its
    `reward`, `baseline` (mean | greedy) and `samples` per image."""

    name: str = "cross_entropy"
    reward: str | None = None
    baseline: str | None = None
    samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainingInfo:
    """training.json, the record `captioner fit` writes into its package; THE parser and writer of that file.

    Args:
        steps: optimiser steps taken.
        data: what the data module describes (source, sizes, held-out pairs, ...).
        used_token_ids: the token ids the training captions held (`train.build.reinit_unused_embeddings`).
        objective: what training minimised (None: not recorded, a package from before).
        started_from: the package it was fine-tuned from; None: from scratch (or, without `objective`, unknown).
        optimizer: the optimiser's settings (lr, weight_decay, betas, warmup_steps, ..., the fine-tuning policy).
        config: the resolved `CaptionerConfig`, as a dict.
    """

    steps: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    used_token_ids: list[int] | None = None
    objective: Objective | None = None
    started_from: Origin | None = None
    optimizer: dict[str, Any] | None = None
    config: dict[str, Any] | None = None

    def to_json(self) -> str:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("objective", "started_from"):
            values[name] = values[name].to_dict() if values[name] is not None else None
        return json.dumps(values, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> TrainingInfo:  # parsed JSON
        """The record from parsed JSON, every field's type checked; fields a newer captioner writes are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object of fields, not {type(data).__name__}")
        records = ("data", "objective", "started_from", "optimizer", "config")  # JSON objects
        kinds = {"steps": int, "used_token_ids": list, **dict.fromkeys(records, dict)}
        values = {k: v for k, v in data.items() if k in kinds}
        for name, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds[name])):
                raise ValueError(f"field {name!r} is {str(value)[:60]!r}; expected a JSON {kinds[name].__name__}")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in values.get("used_token_ids") or []):
            raise ValueError("field 'used_token_ids' holds something other than token ids")
        for name, kind in (("objective", Objective), ("started_from", Origin)):
            if values.get(name) is not None:
                values[name] = _record(kind, name, values[name])
        return cls(**{**values, "data": values.get("data") or {}})


def _record(kind: type, name: str, value: dict[str, Any]) -> Any:
    """An `Origin` or `Objective` from its JSON object: known keys only, text values (`samples` a count)."""
    known = [f.name for f in fields(kind)]

    def fits(key: str, v: Any) -> bool:  # a known key with a text value (`samples`: a count) or null
        return key in known and (v is None or isinstance(v, int if key == "samples" else str))

    wrong = [k for k, v in value.items() if not fits(k, v)]
    if wrong or (kind is Objective and not value.get("name")):
        raise ValueError(f"field {name!r} is {str(value)[:80]}; its keys are {', '.join(known)}")
    return kind(**value)


def read_training(package: str | Path) -> TrainingInfo | None:
    """The package's training.json; None when it has none (a package written by `save_pretrained` alone)."""
    path = Path(package) / TRAINING_FILE
    check_inside(Path(package), (TRAINING_FILE,))
    if not path.is_file():
        return None
    try:
        return TrainingInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path}: not the {TRAINING_FILE} `captioner fit` writes ({err})") from err


# ---- reading ---------------------------------------------------------------------------------------------------------
@dataclass
class Package:
    """A model package as read and checked: its config, its weights' header and its tokenizer; `training` is
    training.json, read when first asked for (loading a model never needs it)."""

    folder: Path
    config: CaptionerConfig
    header: Header
    tokenizer: CaptionTokenizer

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FILE

    @functools.cached_property
    def training(self) -> TrainingInfo | None:
        return read_training(self.folder)


def read_package(folder: str | Path, name: str | Path | None = None) -> Package:
    """Read the package in `folder` (given as `name`, for messages): each file once, the config checked against the
    weights' header and the tokenizer against the config, before any model is built."""
    folder = Path(folder)
    missing = next((n for n in REQUIRED_FILES if not (folder / n).is_file()), None)
    if missing:
        raise FileNotFoundError(
            f"{name or folder} is not a captioner model package: {missing} is missing "
            f"(a package holds {', '.join(REQUIRED_FILES)})"
        )
    check_inside(folder, PACKAGE_FILES)
    config = read_config(folder)
    header = check_header(config, folder / WEIGHTS_FILE, folder / CONFIG_FILE)  # sizes, dtypes: nothing allocated
    tokenizer = read_tokenizer(folder)
    if tokenizer.vocab_size > config.vocab_size:  # fewer is a language model's vocabulary padded above its tokenizer
        raise ValueError(
            f"{folder}: {TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but the model {config.vocab_size}; "
            "a package's tokenizer is the one it was trained with"
        )
    return Package(folder, config, header, tokenizer)


def read_tokenizer(folder: Path) -> CaptionTokenizer:
    """tokenizer.json with the ids special_tokens.json records, `CaptionTokenizer.special` ({"bos_token_id": 1, ...}):
    a file beside tokenizer.json, not config fields, as they are the tokenizer's conventions (a language model's, read
    by transformers), not the network config.json describes; tokenizer.json as `tokenizers` writes it."""
    path = folder / SPECIAL_FILE
    check_inside(folder, (TOKENIZER_FILE, SPECIAL_FILE))
    if not path.is_file():  # a package from before the record
        return CaptionTokenizer.load(folder / TOKENIZER_FILE)
    try:
        return CaptionTokenizer.load(folder / TOKENIZER_FILE, json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not the {SPECIAL_FILE} a package holds ({err})") from err


def read_config(folder: Path) -> CaptionerConfig:
    """The package's config.json; one from before preprocessing was recorded gets the preprocessing of then."""
    config = CaptionerConfig.load(folder / CONFIG_FILE)
    if not config.preprocessing:  # a model always records its resolved preprocessing: only old packages lack it
        log.warning(
            "captioner: note: %s records no preprocessing (exported before it was recorded); using timm's "
            "data config with crop_pct 1.0 and a centre crop, as it was captioned then",
            folder,
        )
        config = replace(config, preprocessing=dict(LEGACY_PREPROCESSING))
    return config


def load_package_weights(model: nn.Module, package: Package) -> None:
    """Fill `model`, built on the meta device from `package.config` (no memory yet), with the package's weights:
    every tensor's shape is checked against the header first, then memory is allocated and the weights loaded."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_shapes(package.weights, package.header, expected, package.folder / CONFIG_FILE)
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # tied parameters (wte, lm_head) stay one tensor
    try:
        model.to_empty(device="cpu")
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    load_checked(model, package.weights)  # every tensor the state dict holds, or an error
    rebuild_computed_buffers(model)


# ---- writing ---------------------------------------------------------------------------------------------------------
def write_package(
    folder: str | Path,
    model: nn.Module,
    config: CaptionerConfig,
    tokenizer: CaptionTokenizer,
    training: TrainingInfo | None = None,
    note: str = "",
    overwrite: bool = False,
) -> Path:
    """Write `model` (its resolved `config`) and `tokenizer` as a package, atomically: a temporary folder beside
    `folder`, then a rename (`captioner.outputs.atomic_folder`); `training` becomes training.json."""
    folder = Path(folder)
    with atomic_folder(folder, overwrite) as tmp:
        config.save(tmp / CONFIG_FILE)
        save_model(model, str(tmp / WEIGHTS_FILE))  # handles the tied lm_head / wte weights
        tokenizer.save(tmp / TOKENIZER_FILE)
        (tmp / SPECIAL_FILE).write_text(json.dumps(tokenizer.special) + "\n", encoding="utf-8")
        parameters = sum(p.numel() for p in model.parameters())
        (tmp / README_FILE).write_text(_readme(config, parameters, note), encoding="utf-8")
        if training is not None:
            (tmp / TRAINING_FILE).write_text(training.to_json(), encoding="utf-8")
    return folder


def _readme(config: CaptionerConfig, parameters: int, note: str) -> str:
    cfg = config.to_dict()
    return (
        "# captioner model package\n\n"
        f"{parameters:,} parameters; encoder `{cfg['encoder_name']}`, decoder {cfg['n_layer']} layers x "
        f"{cfg['n_embd']} wide.\n\n{note}\n\nLoad with `captioner.Captioner.from_pretrained(path)`; config:\n\n"
        f"```json\n{json.dumps(cfg, indent=2)}\n```\n"
    )


# ---- a package's files are its own -----------------------------------------------------------------------------------
def _snapshot_repo(real: Path) -> Path | None:
    """The repo cache folder of a Hugging Face cache snapshot (`models--org--name/snapshots/<commit>`), else None."""
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return None


def package_root(folder: Path) -> Path:
    """The folder a package's files must resolve inside: the package folder itself, or for a snapshot in the Hugging
    Face cache (whose files link into the repo's `blobs/`) the repo's cache folder."""
    real = Path(os.path.realpath(folder))
    return _snapshot_repo(real) or real


def check_inside(folder: Path, names: tuple[str, ...]) -> None:
    """Refuse a package file that is a link leading outside the package (`package_root`): a package is read as
    given, never a file elsewhere on this machine that a link in it points at."""
    root = package_root(folder)
    for name in names:
        path = folder / name
        if not os.path.lexists(path):
            continue
        real = Path(os.path.realpath(path))
        if root != real and root not in real.parents:
            raise ValueError(f"{path} is a link to {real}, outside the package; a package's files are its own")
