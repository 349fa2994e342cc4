"""Captioner: ImageEncoder + TextDecoder, the caption loss, and the model package on disk."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from captioner.config import CaptionerConfig
from captioner.decoder import ImageKV, TextDecoder
from captioner.encoder import ImageEncoder
from captioner.outputs import atomic_folder
from captioner.preprocess import LEGACY_DEFAULTS, Preprocessing
from captioner.tokenizer import IGNORE_INDEX, CaptionTokenizer
from captioner.weights import read_header

log = logging.getLogger(__name__)
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


def caption_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy. THE one place where labels are shifted.

    Args:
        logits: (B, T, V) from `Captioner.forward(images, input_ids)`.
        labels: (B, T), aligned with `input_ids` (not shifted), `IGNORE_INDEX` where no loss is wanted.
    """
    logits = logits[:, :-1]  # position t predicts token t + 1
    targets = labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)


class Captioner(nn.Module):
    """Image -> patch tokens -> cross-attending GPT decoder -> caption logits.

    Building resolves the config: with `decoder_init_from` the decoder is sized from that GPT-2 (layers, heads,
    width, vocabulary) and its weights are loaded; the image preprocessing is resolved from timm's data config
    for the encoder (`captioner.preprocess`). `model.config` is the resolved config, as a package records it.
    """

    def __init__(
        self, config: CaptionerConfig, pretrained_encoder: bool | None = None, pretrained_decoder: bool = True
    ) -> None:
        """Args:
        pretrained_encoder: load the encoder's weights (hub or `encoder_checkpoint`); None follows the config.
        pretrained_decoder: load GPT-2 weights (and take its sizes) when `config.decoder_init_from` is set; a
            model package is built with False: its config is resolved already and its weights come from the file.
        """
        super().__init__()
        if config.decoder_init_from and pretrained_decoder:
            from captioner.gpt2 import gpt2_config

            config = gpt2_config(config)
        self.encoder = ImageEncoder(config, pretrained=pretrained_encoder)
        self.preprocessing = Preprocessing.resolve(self.encoder.backbone, config.encoder_img_size, config.preprocessing)
        self.config = replace(config, preprocessing=self.preprocessing.to_dict())
        self.decoder = TextDecoder(self.config)
        if config.decoder_init_from and pretrained_decoder:
            from captioner.gpt2 import load_gpt2_into

            load_gpt2_into(self.decoder, config.decoder_init_from)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D) image memory."""
        return self.encoder(images)

    def image_kv(self, memory: torch.Tensor) -> ImageKV:
        """Cross-attention keys/values of every decoder layer, computed once per image."""
        return self.decoder.image_kv(memory)

    def forward(
        self, images: torch.Tensor | None, input_ids: torch.Tensor, patch_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W), (B, T) -> (B, T, V) logits. With `patch_tokens` (B, N, De), the backbone's output from
        the feature cache, `images` is None and the backbone does not run."""
        memory = self.encode(images) if patch_tokens is None else self.encoder.project(patch_tokens)  # (B, N, D)
        return self.decoder(input_ids, self.image_kv(memory))

    def loss(
        self,
        images: torch.Tensor | None,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        patch_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return caption_loss(self(images, input_ids, patch_tokens), labels)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ---- the model package: config.json + model.safetensors + tokenizer.json --------------------------------

    def save_pretrained(
        self,
        directory: str | Path,
        tokenizer: CaptionTokenizer,
        overwrite: bool = False,
        note: str = "",
        extra_files: dict[str, str] | None = None,
    ) -> Path:
        """Write the model package atomically: a temporary folder beside `directory`, then a rename.

        `extra_files` (name -> text) are written into the package too, e.g. training.json."""
        directory = Path(directory)
        with atomic_folder(directory, overwrite) as tmp:
            self.config.save(tmp / CONFIG_FILE)
            save_model(self, str(tmp / WEIGHTS_FILE))  # handles the tied lm_head / wte weights
            tokenizer.save(tmp / TOKENIZER_FILE)
            (tmp / "README.md").write_text(_package_readme(self, note), encoding="utf-8")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, map_location: str | torch.device = "cpu", revision: str | None = None
    ) -> tuple[Captioner, CaptionTokenizer]:
        """Load a model package, a folder or a Hub repo id (`org/name`, at `revision`; see `captioner.hub`);
        returns the model (eval mode) and its tokenizer."""
        from captioner.hub import PACKAGE_FILES, resolve_package

        directory = resolve_package(name_or_path, revision)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(
                    f"{name_or_path} is not a captioner model package: {name} is missing "
                    f"(a package holds {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE})"
                )
        check_inside(directory, PACKAGE_FILES)
        config = CaptionerConfig.load(directory / CONFIG_FILE)
        if not json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get("preprocessing"):
            config = replace(config, preprocessing=dict(LEGACY_DEFAULTS))
            log.warning(
                "captioner: note: %s records no preprocessing (exported before it was recorded); using timm's data "
                "config with crop_pct 1.0 and a centre crop, as it was captioned then",
                directory,
            )
        weights = directory / WEIGHTS_FILE
        header = check_header(config, weights)  # sizes and dtypes against the file's header, nothing allocated
        with torch.device("meta"):  # the whole architecture, still without memory
            expected = cls(config, pretrained_encoder=False, pretrained_decoder=False).state_dict()
        _check_shapes(weights, header, {k: tuple(v.shape) for k, v in expected.items()})
        model = cls(config, pretrained_encoder=False, pretrained_decoder=False)  # weights come from the package
        _load_checked(model, weights)
        tokenizer = CaptionTokenizer.load(directory / TOKENIZER_FILE)
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"{directory}: {TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but the model {config.vocab_size}; "
                "a package's tokenizer is the one it was trained with"
            )
        return model.to(map_location).eval(), tokenizer


FLOAT_DTYPES = ("F32", "F16", "BF16")
COUNTERS = (".num_batches_tracked",)  # BatchNorm's step counter (a conv stem, a ResNet): the one integer tensor


def package_root(directory: Path) -> Path:
    """The folder a package's files must resolve inside: the package folder itself, or for a snapshot in the Hugging
    Face cache (`models--org--name/snapshots/<commit>`, whose files link into the repo's `blobs/`) the repo's cache
    folder."""
    real = Path(os.path.realpath(directory))
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        return real.parent.parent
    return real


def check_inside(directory: Path, names: tuple[str, ...]) -> None:
    """Refuse a package file that is a link leading outside the package (`package_root`): a package is read as
    given, never a file elsewhere on this machine that a link in it points at."""
    root = package_root(directory)
    for name in names:
        path = directory / name
        if not os.path.lexists(path):
            continue
        real = Path(os.path.realpath(path))
        if root != real and root not in real.parents:
            raise ValueError(f"{path} is a link to {real}, outside the package; a package's files are its own")


def check_header(config: CaptionerConfig, path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The weights file's header (tensor name -> dtype, shape), read without loading a tensor; a config.json whose
    decoder sizes disagree with it, or a tensor that is not floating point, is named before anything is built."""
    header = read_header(path)
    not_float = [
        (k, d) for k, (d, _) in header.items() if d not in FLOAT_DTYPES and not (k.endswith(COUNTERS) and d == "I64")
    ]
    if not_float:
        raise ValueError(f"{path}: tensor {not_float[0][0]!r} is stored as {not_float[0][1]}; weights are floats")
    tied = header.get("decoder.wte.weight") or header.get("decoder.lm_head.weight") or ("", ())  # saved once
    wte, wpe = tied[1], header.get("decoder.wpe.weight", ("", ()))[1]
    found = {
        "n_layer": len({k.split(".")[2] for k in header if k.startswith("decoder.h.")}),
        "vocab_size": wte[0] if wte else None,
        "n_embd": wte[1] if wte else None,
        "block_size": wpe[0] if wpe else None,
    }
    wrong = [
        f"{k}={getattr(config, k)} but the weights hold {v}"
        for k, v in found.items()
        if v not in (None, getattr(config, k))
    ]
    if wrong:
        raise ValueError(f"{path.parent / CONFIG_FILE} does not match {path.name}: " + "; ".join(wrong))
    return header


def _check_shapes(
    path: Path, header: dict[str, tuple[str, tuple[int, ...]]], expected: dict[str, tuple[int, ...]]
) -> None:
    for key, (_, shape) in header.items():
        if key in expected and shape != expected[key]:
            raise ValueError(
                f"{path}: tensor {key!r} has shape {shape} but the model built from config.json expects {expected[key]}"
            )


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load safetensors weights, naming the tensor and both shapes on a mismatch, and a tensor that is not finite."""
    path = Path(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_shapes(path, check_header(model.config, path), expected)  # type: ignore[arg-type]
    _load_checked(model, path)


def _load_checked(model: nn.Module, path: Path) -> None:
    """Load weights whose header was checked already; refuse missing, unexpected and non-finite tensors."""
    try:
        missing, unexpected = load_model(model, str(path), strict=False)  # knows the tied lm_head / wte weights
    except SafetensorError as err:  # what the header check cannot see, e.g. tensors whose bytes overlap
        raise ValueError(f"{path}: the weights cannot be read ({err}); the file is damaged") from err
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {sorted(missing)[:5]}, unexpected tensors {sorted(unexpected)[:5]}")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite values; this package cannot caption")


def _package_readme(model: Captioner, note: str) -> str:
    cfg: dict[str, Any] = model.config.to_dict()
    return (
        "# captioner model package\n\n"
        f"{model.num_parameters():,} parameters; encoder `{cfg['encoder_name']}`, decoder {cfg['n_layer']} layers x "
        f"{cfg['n_embd']} wide.\n\n{note}\n\nLoad with `captioner.Captioner.from_pretrained(path)`; config:\n\n"
        f"```json\n{json.dumps(cfg, indent=2)}\n```\n"
    )
