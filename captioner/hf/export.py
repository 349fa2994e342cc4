"""`captioner export-hf PACKAGE OUT`: a folder transformers loads with its Auto classes (trust_remote_code=True).

Written: config.json (with auto_map) and model.safetensors through `save_pretrained`, which also copies the three
self-contained code files of this folder (configuration, modeling, and the decoder it imports); the tokenizer
(`PreTrainedTokenizerFast` over the package's tokenizer.json, its BOS/EOS/pad as the package records them); the
image processor that equals the package's preprocessing (`ViTImageProcessor` for captioner's default "squash"
resize, `CLIPImageProcessor` for a resize + centre crop); the processor that joins those two
(processing_captioner.py, `AutoProcessor`: what transformers' `image-text-to-text` pipeline loads);
generation_config.json (BOS as the decoder start, EOS, pad, at most block_size tokens). The folder is written
beside OUT and renamed into place.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from captioner.config import LM_FIELDS
from captioner.model import Captioner
from captioner.outputs import atomic_folder, check_apart
from captioner.package import TOKENIZER_FILE
from captioner.preprocess import Preprocessing
from captioner.tokenizer import CaptionTokenizer

RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL's numbers, as transformers stores them


def hf_config(model: Captioner, tokenizer: CaptionTokenizer):  # the remote-code config class
    from captioner.hf.configuration_captioner import CaptionerConfig as RemoteConfig

    c = model.config
    decoder = {f: getattr(c, f) for f in LM_FIELDS if f != "tie_word_embeddings"}  # the head is its own tensor there
    return RemoteConfig(
        encoder_name=c.encoder_name,
        encoder_img_size=c.encoder_img_size,
        encoder_patch_size=c.encoder_patch_size,
        encoder_kwargs=dict(c.encoder_kwargs),
        encoder_conv_stem=c.encoder_conv_stem,
        block_size=c.block_size,
        **decoder,
        cross_attention_layers=c.cross_layers(),
        cross_gate=c.cross_gate,
        cross_mlp=c.cross_mlp,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        tie_word_embeddings=False,
    )


def image_processor(pre: Preprocessing):
    """The transformers image processor that does what `pre.eval_transform()` does."""
    from transformers import CLIPImageProcessor, ViTImageProcessor

    _, h, w = pre.input_size
    common = {
        "resample": RESAMPLE.get(pre.interpolation, 3),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(pre.mean),
        "image_std": list(pre.std),
    }
    if pre.crop_mode == "squash":  # the whole image, resized to the input size
        return ViTImageProcessor(do_resize=True, size={"height": h, "width": w}, **common)
    if pre.crop_mode == "center" and h == w:
        edge = math.floor(h / pre.crop_pct)  # timm's eval resize: the shorter side to size / crop_pct
        return CLIPImageProcessor(
            size={"shortest_edge": edge},
            crop_size={"height": h, "width": w},
            do_center_crop=True,
            do_convert_rgb=True,
            **common,
        )
    raise ValueError(
        f"preprocessing crop_mode={pre.crop_mode!r} with input {h}x{w} has no transformers image processor; "
        "export-hf supports 'squash' and square 'center' crops"
    )


def generation_config(tokenizer: CaptionTokenizer, block_size: int):  # a transformers GenerationConfig
    """BOS as the decoder start, EOS, pad, at most `block_size` tokens (generation_config.json of the exports)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        decoder_start_token_id=tokenizer.bos_id,
        max_length=block_size,
    )


def export_hf(package: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the transformers folder of `package` (a folder or Hub repo id) to `out`; `out` may not be the package,
    lie inside it or hold it (OutputError)."""
    from transformers import PreTrainedTokenizerFast

    from captioner.hf.modeling_captioner import CaptionerForConditionalGeneration
    from captioner.hf.processing_captioner import CaptionerProcessor
    from captioner.hub import resolve_package

    folder = resolve_package(package)
    check_apart([out], [folder], "out")  # --overwrite must never replace the package it reads
    model, tokenizer = Captioner.from_pretrained(folder)
    images = image_processor(model.preprocessing)
    config = hf_config(model, tokenizer)
    config.register_for_auto_class()
    CaptionerForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    hf = CaptionerForConditionalGeneration(config).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:  # one tensor in captioner; its own tensor here
        state["decoder.lm_head.weight"] = state["decoder.wte.weight"].clone()
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"the transformers model does not match the package: missing {missing}, extra {unexpected}")
    hf.generation_config = generation_config(tokenizer, model.config.block_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / TOKENIZER_FILE),
        bos_token=tokenizer.tokenizer.id_to_token(tokenizer.bos_id),
        eos_token=tokenizer.tokenizer.id_to_token(tokenizer.eos_id),
        pad_token=tokenizer.tokenizer.id_to_token(tokenizer.pad_id),
        model_max_length=model.config.block_size,
    )
    CaptionerProcessor.register_for_auto_class("AutoProcessor")
    processor = CaptionerProcessor(images, fast)
    with atomic_folder(Path(out), overwrite) as tmp, torch.no_grad():
        hf.save_pretrained(tmp, safe_serialization=True)
        images.save_pretrained(tmp)  # preprocessor_config.json: what AutoImageProcessor reads
        processor.save_pretrained(tmp)  # the tokenizer, processor_config.json and processing_captioner.py
    return Path(out)
