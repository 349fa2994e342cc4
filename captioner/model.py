"""Captioner: ImageEncoder + TextDecoder and the caption loss; on disk, a model package (`captioner.package`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from captioner.config import CaptionerConfig
from captioner.decoder import ImageKV, TextDecoder
from captioner.encoder import ImageEncoder
from captioner.package import (
    TrainingInfo,
    load_package_weights,
    read_package,
    write_package,
)
from captioner.preprocess import Preprocessing
from captioner.static_step import DecodeStep
from captioner.tokenizer import IGNORE_INDEX, CaptionTokenizer

if TYPE_CHECKING:
    from captioner.decoding import GenerationConfig


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
    """Image -> patch tokens -> cross-attending decoder -> caption logits.

    Building resolves the config: with `decoder_init_from` the decoder takes the blocks and sizes of that
    pretrained language model (`captioner.lm`: layers, heads, width, norms, positions, vocabulary) and its
    weights; the image preprocessing is resolved from timm's data config for the encoder (`captioner.preprocess`).
    `model.config` is the resolved config, as a package records it.
    """

    def __init__(
        self, config: CaptionerConfig, pretrained_encoder: bool | None = None, pretrained_decoder: bool = True
    ) -> None:
        """Args:
        pretrained_encoder: load the encoder's weights (hub or `encoder_checkpoint`); None follows the config.
        pretrained_decoder: load the language model's weights (and take its blocks) when `config.decoder_init_from`
            is set; a model package is built with False: its config is resolved already and its weights come from
            the file.
        """
        super().__init__()
        lm = None
        if config.decoder_init_from and pretrained_decoder:
            from captioner.lm import lm_config, open_lm

            lm = open_lm(config.decoder_init_from)
            config = lm_config(config, lm)
        self.encoder = ImageEncoder(config, pretrained=pretrained_encoder)
        self.preprocessing = Preprocessing.resolve(self.encoder.backbone, config.encoder_img_size, config.preprocessing)
        self.config = replace(config, preprocessing=self.preprocessing.to_dict())
        self.decoder = TextDecoder(self.config)
        if lm is not None:
            from captioner.lm import load_lm_into

            load_lm_into(self.decoder, lm)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, D) image memory."""
        return self.encoder(images)

    def image_kv(self, memory: torch.Tensor) -> ImageKV:
        """Keys/values of every cross-attention layer of the decoder, computed once per image."""
        return self.decoder.image_kv(memory)

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.parameters()).device

    def decode_steps(self, memory: torch.Tensor, config: GenerationConfig) -> DecodeStep:
        """The decoder over memory (B, N, D) as the decoding loops drive it (`captioner.decoding.Steps`)."""
        return DecodeStep(self.decoder, memory, config)

    def forward(
        self, images: torch.Tensor | None, input_ids: torch.Tensor, patch_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W), (B, T) -> (B, T, V) logits. With `patch_tokens` (B, N, De), the backbone's output from
        the feature cache, `images` is None and the backbone does not run."""
        if patch_tokens is not None:
            memory = self.encoder.project(patch_tokens)  # (B, N, D)
        elif images is not None:
            memory = self.encode(images)
        else:
            raise ValueError("Captioner.forward needs images or patch_tokens")
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

    # ---- the model package (captioner.package) ----------------------------------------------------------------------

    def save_pretrained(
        self,
        package: str | Path,
        tokenizer: CaptionTokenizer,
        overwrite: bool = False,
        note: str = "",
        training: TrainingInfo | None = None,
    ) -> Path:
        """Write the model package atomically (`captioner.package.write_package`); `training` is its training.json."""
        return write_package(package, self, self.config, tokenizer, training, note, overwrite)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, map_location: str | torch.device = "cpu", revision: str | None = None
    ) -> tuple[Captioner, CaptionTokenizer]:
        """Load a model package, a folder or a Hub repo id (`org/name`, at `revision`; see `captioner.hub`);
        returns the model (eval mode) and its tokenizer. Each file is read once and the model built once."""
        from captioner.hub import resolve_package

        package = read_package(resolve_package(name_or_path, revision), name_or_path)
        with torch.device("meta"):  # the whole architecture without memory, checked against the weights' header
            model = cls(package.config, pretrained_encoder=False, pretrained_decoder=False)
        load_package_weights(model, package)  # then allocated and filled from the file
        return model.to(map_location).eval(), package.tokenizer
