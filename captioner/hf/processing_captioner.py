"""The processor of a captioner model exported for transformers (`AutoProcessor`, trust_remote_code=True): what
`pipeline("image-text-to-text", model=EXPORT, trust_remote_code=True)` loads.

Self-contained: written by `captioner export-hf`, it imports transformers only. It joins the export's image
processor and tokenizer. `processor(images=..., text="")` gives `pixel_values` and `decoder_input_ids` (BOS, then
the prompt's tokens if any: generate() continues them), and `post_process_image_text_to_text` decodes as captioner
does (special tokens dropped, stop at the first EOS, a broken UTF-8 byte sequence dropped rather than U+FFFD), so
the pipeline's text is `captioner caption`'s. The image processor is loaded with transformers' PIL backend unless
`backend=` says otherwise: the PIL resize is the one captioner's preprocessing runs, pixel for pixel (the
torchvision backend resizes its own way and may round a few pixels to the neighbouring intensity level).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoImageProcessor, BatchFeature, ProcessorMixin
from transformers.convert_slow_tokenizer import bytes_to_unicode

_BYTE_OF = {ch: b for b, ch in bytes_to_unicode().items()}  # GPT-2's table, as captioner's tokenizer


class CaptionerProcessor(ProcessorMixin):
    """Images (and an optional prompt) -> `pixel_values` (B, 3, H, W) and `decoder_input_ids` (B, 1 + prompt);
    generated ids -> captions."""

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None) -> None:
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str = "main",
        **kwargs: Any,
    ) -> CaptionerProcessor:
        """As ProcessorMixin's, with the image processor of the PIL backend unless `backend=` names another."""
        hub: dict[str, Any] = {
            "cache_dir": cache_dir,
            "force_download": force_download,
            "local_files_only": local_files_only,
            "token": token,
            "revision": revision,
        }
        if kwargs.get("image_processor") is None:
            backend = kwargs.pop("backend", "pil")
            loading = {k: v for k, v in kwargs.items() if k not in ("image_processor", "tokenizer")}
            image_processor, _ = AutoImageProcessor.from_pretrained(  # the kwargs it does not use come back
                pretrained_model_name_or_path, backend=backend, **hub, **{**loading, "return_unused_kwargs": True}
            )
            kwargs["image_processor"] = image_processor
        return super().from_pretrained(pretrained_model_name_or_path, **hub, **kwargs)

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,  # what the pipeline passes for other processors (padding): nothing to do here
    ) -> BatchFeature:
        """`images`: one image or a list; `text`: None or "" for a plain caption, else a prompt the caption
        continues (one for all images, or one per image, all of the same token length)."""
        if images is None:
            raise ValueError("a captioner model captions images: pass images=")
        pixel_values = self.image_processor(images, return_tensors="pt").pixel_values  # (B, 3, H, W)
        count = pixel_values.shape[0]
        prompts = [text or ""] * count if text is None or isinstance(text, str) else list(text)
        if len(prompts) == 1:
            prompts = prompts * count
        if len(prompts) != count:
            raise ValueError(f"{len(prompts)} prompts for {count} images: pass one prompt, or one per image")
        bos = self.tokenizer.bos_token_id
        rows = [[bos, *self.tokenizer(p, add_special_tokens=False).input_ids] if p else [bos] for p in prompts]
        if len({len(r) for r in rows}) > 1:  # the decoder has no padding mask: a batch shares one prompt length
            raise ValueError("prompts of different token lengths in one batch: caption them one call at a time")
        data = {"pixel_values": pixel_values, "decoder_input_ids": torch.tensor(rows, dtype=torch.long)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def decode_caption(self, ids: Any) -> str:
        """Token ids -> text as captioner's `CaptionTokenizer.decode`: special tokens dropped, stop at the first EOS;
        byte-level tokens joined as bytes, an incomplete or invalid UTF-8 sequence dropped."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        tok = self.tokenizer
        if ids and ids[0] == tok.bos_token_id:  # BOS may equal EOS (GPT-2)
            ids = ids[1:]
        out: list[int] = []
        for i in ids:
            if i == tok.eos_token_id:
                break
            if i not in (tok.pad_token_id, tok.bos_token_id):
                out.append(i)
        backend = tok.backend_tokenizer  # the tokenizers.Tokenizer of tokenizer.json, which captioner decodes with
        special = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}  # never decoded
        if type(backend.decoder).__name__ != "ByteLevel":
            return backend.decode(out, skip_special_tokens=True).replace("\ufffd", "")
        data = bytearray()
        for i in out:
            token = "" if i in special else backend.id_to_token(i) or ""
            if all(ch in _BYTE_OF for ch in token):
                data.extend(_BYTE_OF[ch] for ch in token)
            else:  # an added (non-special) token, stored as plain text
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors="ignore")

    def post_process_image_text_to_text(
        self, generated_outputs: Any, skip_special_tokens: bool = True, **kwargs: Any
    ) -> list[str]:
        """generate()'s (B, T) or (T,) ids -> one caption each (the pipeline's `generated_text`); with
        `skip_special_tokens=False`, the tokenizer's own decode."""
        rows = generated_outputs.tolist() if hasattr(generated_outputs, "tolist") else list(generated_outputs)
        rows = [rows] if rows and not isinstance(rows[0], list) else rows
        if not skip_special_tokens:
            return self.tokenizer.batch_decode(rows, skip_special_tokens=False, **kwargs)
        return [self.decode_caption(r) for r in rows]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "decoder_input_ids"]


__all__ = ["CaptionerProcessor"]
