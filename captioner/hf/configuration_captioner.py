"""The configuration of a captioner model exported for transformers (`AutoConfig`, trust_remote_code=True).

Self-contained: written by `captioner export-hf`, it imports transformers only."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class CaptionerConfig(PretrainedConfig):
    """A timm ViT encoder (`encoder_name` with `encoder_kwargs`, `encoder_img_size`, `encoder_patch_size`; with
    `encoder_conv_stem` channels, timm's `ConvStem` in place of its patchify conv) and a
    decoder of `n_layer` blocks described as captioner's `CaptionerConfig` describes them (same field names): causal
    self-attention, cross-attention to the image in the blocks `cross_attention_layers` lists, an MLP."""

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
        n_query_groups: int | None = None,
        head_size: int | None = None,
        attn_bias: bool = False,
        norm_class_name: str = "LayerNorm",
        norm_eps: float = 1e-5,
        norm_add_unit_offset: bool = False,
        norm_qk: bool = False,
        positions: str = "learned",
        rope_base: float = 10000.0,
        rope_adjustments: dict[str, float] | None = None,
        rope_layers: list[int] | None = None,
        mlp_class_name: str = "GptNeoxMLP",
        intermediate_size: int | None = None,
        scale_embeddings: bool = False,
        final_logit_softcapping: float | None = None,
        attention_logit_softcapping: float | None = None,
        attention_scores_scalar: int | None = None,
        post_attention_norm: bool = False,
        post_mlp_norm: bool = False,
        cross_attention_layers: list[int] | None = None,
        cross_gate: bool = False,
        cross_mlp: bool = False,
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
        self.bias, self.gelu_approximate = bias, gelu_approximate
        self.n_query_groups, self.head_size, self.attn_bias = n_query_groups, head_size, attn_bias
        self.norm_class_name, self.norm_eps = norm_class_name, norm_eps
        self.norm_add_unit_offset, self.norm_qk = norm_add_unit_offset, norm_qk
        self.positions, self.rope_base = positions, rope_base
        self.rope_adjustments = dict(rope_adjustments) if rope_adjustments else None
        self.rope_layers = list(rope_layers) if rope_layers is not None else None
        self.mlp_class_name, self.intermediate_size = mlp_class_name, intermediate_size
        self.scale_embeddings, self.final_logit_softcapping = scale_embeddings, final_logit_softcapping
        self.attention_logit_softcapping, self.attention_scores_scalar = (
            attention_logit_softcapping,
            attention_scores_scalar,
        )
        self.post_attention_norm, self.post_mlp_norm = post_attention_norm, post_mlp_norm
        # the blocks with a cross-attention sub-layer (captioner's `cross_layers()`); None: every block
        self.cross_attention_layers = list(range(n_layer) if cross_attention_layers is None else cross_attention_layers)
        self.cross_gate, self.cross_mlp = cross_gate, cross_mlp
        kwargs.setdefault("is_encoder_decoder", True)  # generate() encodes the image once, then decodes
        kwargs.setdefault("decoder_start_token_id", bos_token_id)
        # by keyword: transformers 4 names these in PretrainedConfig.__init__, transformers 5 takes them as extras
        kwargs.update(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        super().__init__(**kwargs)
