"""The configuration of a captioner model exported for transformers (`AutoConfig`, trust_remote_code=True).

Self-contained: written by `captioner export-hf`, it imports transformers only."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class CaptionerConfig(PretrainedConfig):
    """A timm ViT encoder (`encoder_name` with `encoder_kwargs`, `encoder_img_size`, `encoder_patch_size`; with
    `encoder_conv_stem` channels, timm's `ConvStem` in place of its patchify conv) and a
    GPT-style decoder of `n_layer` blocks (causal self-attention, cross-attention to the image, MLP)."""

    model_type = "captioner"
    # the names transformers' caches and utilities read
    attribute_map = {
        "num_hidden_layers": "n_layer",
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "max_position_embeddings": "block_size",
    }

    def __init__(
        self,
        encoder_name: str = "vit_tiny_patch16_224",
        encoder_img_size: int | None = None,
        encoder_patch_size: int | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        encoder_conv_stem: list[int] | None = None,
        vocab_size: int = 384,
        block_size: int = 40,
        n_layer: int = 1,
        n_head: int = 1,
        n_embd: int = 128,
        bias: bool = True,
        gelu_approximate: str = "none",
        cross_gate: bool = False,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        pad_token_id: int = 0,
        **kwargs: Any,
    ) -> None:
        self.encoder_name, self.encoder_img_size, self.encoder_patch_size = (
            encoder_name,
            encoder_img_size,
            encoder_patch_size,
        )
        self.encoder_kwargs = dict(encoder_kwargs or {})
        self.encoder_conv_stem = list(encoder_conv_stem) if encoder_conv_stem else None
        self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd = (
            vocab_size,
            block_size,
            n_layer,
            n_head,
            n_embd,
        )
        self.bias, self.gelu_approximate, self.cross_gate = bias, gelu_approximate, cross_gate
        kwargs.setdefault("is_encoder_decoder", True)  # generate() encodes the image once, then decodes
        kwargs.setdefault("decoder_start_token_id", bos_token_id)
        # by keyword: transformers 4 names these in PretrainedConfig.__init__, transformers 5 takes them as extras
        kwargs.update(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        super().__init__(**kwargs)
