"""A pretrained language model's files: a local folder or a Hub repo id (`org/name`, `org/name@revision`), its
transformers config and its safetensors weights (one file or shards). Pickled `.bin` weights are never read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

# what a causal LM checkpoint holds that a start reads, by transformers' own names (its tokenizer is read by
# `CaptionTokenizer.from_hf`)
LM_FILES = (CONFIG_NAME, "generation_config.json", "*.safetensors", SAFE_WEIGHTS_INDEX_NAME, "tokenizer*",
            "special_tokens_map.json", "vocab.json", "merges.txt")  # fmt: skip
WEIGHTS, INDEX = SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME


def lm_folder(name_or_path: str) -> Path:
    """The local folder of `decoder_init_from`: the folder itself, else the Hub repo's files (downloaded or cached)."""
    from captioner.hub import download, is_repo_id

    path = Path(name_or_path)
    if path.is_dir():
        return path
    name, _, revision = name_or_path.partition("@")
    if path.exists() or not is_repo_id(name):
        raise ValueError(f"decoder_init_from={name_or_path!r} is neither a folder here nor a Hub repo id (org/name)")
    return download(name, revision or None, LM_FILES).folder


def model_type(folder: Path, name: str) -> str:
    """The checkpoint's `model_type`, read from its config.json before transformers interprets it."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"decoder_init_from={name}: {path} is missing; give a folder saved by save_pretrained")
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"decoder_init_from={name}: {path} is not a JSON object ({err})") from None
    return str(found)


def hf_config(folder: Path) -> Any:
    """The transformers config of the checkpoint (defaults filled in, old field names standardised)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def weight_files(folder: Path, name: str) -> list[Path]:
    """The checkpoint's safetensors files: model.safetensors, or the shards its index names."""
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    if (folder / INDEX).is_file():
        shards = sorted(set(json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / s for s in shards]
    if any(folder.glob("*.bin")):
        raise ValueError(
            f"decoder_init_from={name}: its PyTorch .bin weights need arbitrary unpickling (which could run code) and "
            "were refused; use a checkpoint with model.safetensors (if you trust the file, load it once in Python "
            "with transformers and save_pretrained it: that writes safetensors)"
        )
    raise ValueError(f"decoder_init_from={name}: {folder} holds no {WEIGHTS}; give a folder saved by save_pretrained")


def read_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint by its Hugging Face name; each file's header is checked before it is read."""
    from safetensors.torch import load_file

    from captioner.weights import read_header

    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder, name):
        read_header(path)
        state.update(load_file(path))
    return state
