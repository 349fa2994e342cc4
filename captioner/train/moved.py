"""Config keys that moved when the module's and the data's arguments were grouped: an old key, on the command
line or in a `--config` file, is refused in one line that names its new place (instead of jsonargparse's list of
every valid key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_DATA = "data.init_args."
MOVED: dict[str, str] = {
    **{
        f"model.{k}": f"model.optimizer.{k}"
        for k in (
            "lr",
            "weight_decay",
            "betas",
            "warmup_steps",
            "min_lr_ratio",
            "encoder_lr_mult",
            "encoder_layer_decay",
            "max_nonfinite_steps",
        )
    },
    **{
        f"model.{k}": f"model.validation.{k}"
        for k in ("generate_batches", "num_samples", "caption_metrics_every_n_epochs", "generation")
    },
    **{
        f"model.{k}": f"model.speed.{k}"
        for k in ("feature_cache", "feature_cache_dtype", "compile", "compile_options", "tf32")
    },
    "model.finetune=<policy>": "model.finetune.policy",
    "model.encoder_frozen_epochs": "model.finetune.encoder_frozen_epochs",
    "model.reinit_unused_tokens": "model.finetune.reinit_unused_tokens",
    "model.block_size": "model.finetune.block_size",
    "model.vocab_size": "model.tokenizer.vocab_size",
    "model.extend_vocab": "model.tokenizer.extend",
    f"{_DATA}vocab_size": "model.tokenizer.vocab_size",
    f"{_DATA}tokenizer_path": "model.tokenizer.path",
    f"{_DATA}hf_tokenizer": "model.tokenizer.path",
    f"{_DATA}extend_vocab": "model.tokenizer.extend",
    f"{_DATA}tokenizer_captions": "model.tokenizer.train_captions",
    f"{_DATA}tokenizer_scenes": "model.tokenizer.train_captions",
    **{f"{_DATA}{k}": f"{_DATA}captions.{k}" for k in ("max_length", "truncate", "max_truncated")},
    f"{_DATA}image_column": f"{_DATA}columns.image",
    f"{_DATA}caption_column": f"{_DATA}columns.caption",
    f"{_DATA}val_fraction": f"{_DATA}split.val_fraction",
    f"{_DATA}karpathy_train_splits": f"{_DATA}split.karpathy_train",
    **{f"{_DATA}{k}": f"{_DATA}images.{k}" for k in ("drop_missing", "allow_outside_root", "max_failure_rate")},
    f"{_DATA}max_image_pixels": f"{_DATA}images.max_pixels",
    f"{_DATA}augment=<bool>": f"{_DATA}augment.crop",
    f"{_DATA}hflip": f"{_DATA}augment.hflip",
    **{f"{_DATA}{k}": f"{_DATA}stream.{k}" for k in ("epoch_samples", "shuffle_buffer")},
}


class MovedKeyError(ValueError):
    """A config key of the flat layout; the message names its new place."""


def moved(key: str, value: Any = None) -> str | None:
    """The new place of `key` (dotted, as on the command line), or None when it did not move. `model.finetune`
    and `data.init_args.augment` became groups: only a plain value (a policy, a bool) there is the old form."""
    key = key.replace("data.init_args.", "data.").replace("data.", _DATA, 1) if key.startswith("data.") else key
    if key == "model.finetune" and isinstance(value, str) and not value.lstrip().startswith(("{", "policy")):
        return MOVED["model.finetune=<policy>"]
    if key == f"{_DATA}augment" and (isinstance(value, bool) or str(value).lower() in ("true", "false")):
        return MOVED[f"{_DATA}augment=<bool>"]
    return MOVED.get(key)


def _flat(tree: Any, prefix: str) -> list[tuple[str, Any]]:
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [item for k, v in tree.items() for item in (_flat(v, f"{prefix}.{k}") if prefix else _flat(v, str(k)))]


def _config_keys(path: str) -> list[tuple[str, Any]]:
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []  # LightningCLI reports an unreadable config itself
    if not isinstance(tree, dict):
        return []
    keys = []
    for section in ("model", "data"):
        part = tree.get(section)
        if isinstance(part, dict):  # one level deep under model, under data.init_args: where the old keys were
            args = part.get("init_args", part) if section == "data" else part
            where = _DATA if section == "data" else "model."
            keys += [(f"{where}{k}", v) for k, v in (args.items() if isinstance(args, dict) else [])]
    return keys


def check_moved(args: list[str]) -> None:
    """Raise MovedKeyError naming the new place of every old key in `args` and in the `--config` files they give."""
    found: list[tuple[str, str, str]] = []  # (old key, new key, where)
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args) or arg.startswith("--config="):
            file = arg.split("=", 1)[1] if "=" in arg else args[i + 1]
            found += [(k, new, file) for k, v in _config_keys(file) if (new := moved(k, v))]
        elif arg.startswith("--") and arg[2:].startswith(("model.", "data.")):
            key, has, inline = arg[2:].partition("=")
            value = inline if has else (args[i + 1] if i + 1 < len(args) else None)
            if new := moved(key, value):
                found.append((key, new, "the command line"))
    if found:
        moves = "; ".join(f"{old} is now {new} ({where})" for old, new, where in found)
        raise MovedKeyError(f"config keys moved when the arguments were grouped: {moves}")
