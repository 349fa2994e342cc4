"""A captioner model for transformers (`AutoModelForImageTextToText`, trust_remote_code=True).

Self-contained: written by `captioner export-hf`, it imports torch, timm and transformers only. The parameter
names are captioner's own (encoder.backbone/ln/proj; decoder.wte/wpe/h/ln_f/lm_head, nanoGPT's), so the weights are
the package's, unchanged; the decoder's blocks are in decoder_captioner.py.
`generate(pixel_values=...)` is transformers' own: the image is encoded once, each step runs the decoder on the new
token with a key/value cache (of the key/value heads), and beam search reorders that cache.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .configuration_captioner import CaptionerConfig
from .decoder_captioner import TextDecoder

# transformers 5 names the cache `cache`; transformers 4 named it `past_key_values`
CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


class ImageEncoder(nn.Module):
    """timm backbone -> patch tokens (B, N, De), class/register tokens dropped -> LayerNorm + Linear -> (B, N, D)."""

    main_input_name = "pixel_values"

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__()
        kwargs = dict(config.encoder_kwargs)
        if config.encoder_img_size is not None:
            kwargs["img_size"] = config.encoder_img_size
        if config.encoder_patch_size is not None:
            kwargs["patch_size"] = config.encoder_patch_size
        # Any: timm's models share no typed interface (forward_features, num_features, patch_embed), nn.Module's only
        backbone: Any = timm.create_model(config.encoder_name, pretrained=False, num_classes=0, **kwargs)
        if getattr(backbone, "attn_pool", None) is not None:  # captioner.encoder.drop_pooling_head: never run
            backbone.reset_classifier(0, global_pool="")
        # captioner.encoder.install_conv_stem, repeated here: this file imports no captioner code
        if config.encoder_conv_stem:  # 3x3 stride-2 conv + BatchNorm + ReLU stages, then a 1x1 conv to the width
            from timm.models.vision_transformer_hybrid import ConvStem

            proj, stages = backbone.patch_embed.proj, len(config.encoder_conv_stem)
            backbone.patch_embed.proj = ConvStem(
                in_chans=proj.in_channels,
                depth=stages + 1,
                channels=(*config.encoder_conv_stem, proj.out_channels),
                kernel_size=(3,) * stages + (1,),
                stride=(2,) * stages + (1,),
            )
        self.backbone: Any = backbone
        self.num_prefix_tokens = getattr(backbone, "num_prefix_tokens", 0)
        width = backbone.num_features
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, config.n_embd)

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutput:
        feats = self.backbone.forward_features(pixel_values)
        tokens = feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats[:, self.num_prefix_tokens :]
        return BaseModelOutput(last_hidden_state=self.proj(self.ln(tokens.to(self.ln.weight.dtype))))  # (B, N, D)


class CaptionerPreTrainedModel(PreTrainedModel):
    config_class = CaptionerConfig
    base_model_prefix = "captioner"
    main_input_name = "pixel_values"
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:  # what the weights file does not hold starts as in GPT-2
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:  # an embedding has none
                nn.init.zeros_(module.bias)


class CaptionerForConditionalGeneration(CaptionerPreTrainedModel, GenerationMixin):
    """Image -> caption. `model.generate(pixel_values=processor(images, return_tensors="pt").pixel_values)`."""

    def __init__(self, config: CaptionerConfig) -> None:
        super().__init__(config)
        self.encoder = ImageEncoder(config)
        self.decoder = TextDecoder(config)
        self.post_init()

    def get_encoder(self, *args, **kwargs) -> nn.Module:
        return self.encoder

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.wte

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,  # the cache (`cache` or `past_key_values`), masks generate passes
    ) -> Seq2SeqLMOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(pixel_values)
        memory = encoder_outputs[0]  # (B, N, D)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self_cache = getattr(cache, "self_attention_cache", cache) if use_cache is not False else None
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are needed (generate() starts them with the BOS token)")
        logits = self.decoder(decoder_input_ids, memory, self_cache)  # (B, T, V)
        loss = None
        if labels is not None:  # labels aligned with decoder_input_ids; position t predicts token t + 1
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        out = {"loss": loss, "logits": logits, "encoder_last_hidden_state": memory, CACHE_FIELD: cache}
        return Seq2SeqLMOutput(**out)


__all__ = ["CaptionerForConditionalGeneration", "CaptionerPreTrainedModel"]
