"""The web page (Gradio): drop or pick an image, see its caption, the n-best list with scores, and where each
word looked (its cross-attention map over the image); decoding controls beside it. It captions through the same
batcher as the API, so page users and API clients share batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import torch

from captioner.data.images import ImageDecodeError, load_rgb
from captioner.generate import GenerationConfig
from captioner.serve.api import MAX_BEAMS, Service
from captioner.serve.batcher import QueueFull
from captioner.viz import cross_attention_maps, overlay, word_maps


def create_page(service: Service) -> gr.Blocks:
    longest = service.model.config.block_size - 1
    with gr.Blocks(title=f"captioner · {service.name}") as page:
        gr.Markdown(f"## captioner\nModel `{service.name}`. Drop an image, or pick one, and press Caption.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                                 elem_id="image")  # fmt: skip
                with gr.Accordion("Decoding", open=False):
                    beams = gr.Slider(1, MAX_BEAMS, value=1, step=1, label="Beams (1: greedy)")
                    n_best = gr.Slider(1, MAX_BEAMS, value=1, step=1, label="Captions to return (n-best)")
                    sample = gr.Checkbox(value=False, label="Sample instead of greedy / beam search")
                    temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature (sampling)")
                    max_tokens = gr.Slider(1, longest, value=longest, step=1, label="Max new tokens")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column():
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                table = gr.Dataframe(headers=["caption", "score"], label="n-best", interactive=False, wrap=True,
                                     column_widths=["82%", "18%"], elem_id="nbest")  # fmt: skip
                maps = gr.Gallery(label="Cross-attention of each word", columns=4, height="auto", elem_id="maps")
        inputs = [image, beams, n_best, sample, temperature, max_tokens]
        button.click(lambda *a: caption_image(service, *a), inputs, [caption, table, maps], api_visibility="private")
    return page


def caption_image(
    service: Service, path: str | None, beams: float, n_best: float, sample: bool, temperature: float,
    max_tokens: float,
) -> tuple[str, list[list[Any]], list[tuple[Any, str]]]:  # fmt: skip
    """One image from the page -> (caption, n-best rows, (overlay, word) per word); gr.Error for bad input."""
    if not path:
        raise gr.Error("drop or pick an image first")
    beams, n_best = int(beams), int(n_best)
    generation = GenerationConfig(
        num_beams=1 if sample else beams, num_return_sequences=n_best if sample else min(n_best, beams),
        do_sample=bool(sample), temperature=float(temperature), max_new_tokens=int(max_tokens),
    )  # fmt: skip
    try:
        generation.validate()
        data = Path(path).read_bytes()
        pixels = service.preprocess(data, Path(path).name)  # (H, W, 3) uint8
    except (ImageDecodeError, ValueError) as err:
        raise gr.Error(str(err)) from err
    try:
        result = service.submit(pixels, generation).result(timeout=service.limits.timeout_s)
    except QueueFull as err:
        raise gr.Error(f"busy: {err}; try again in a moment") from err
    except TimeoutError as err:
        raise gr.Error(f"the caption was not ready within {service.limits.timeout_s:g} s; try again") from err
    picture = load_rgb(data, service.limits.max_pixels)
    image = service.to_batch(pixels[None]).to(service.device)  # (1, 3, H, W)
    with torch.inference_mode():
        tokens = [result.tokens or [service.tokenizer.eos_id]]
        (attention,) = cross_attention_maps(service.model, image, tokens, service.tokenizer.bos_id)  # (T, h, w)
    words = word_maps(service.tokenizer, result.tokens, attention) if result.tokens else []
    rows = [[text, round(score, 4)] for text, score in result.n_best]
    return result.text, rows, [(overlay(picture, m, 192), word) for word, m in words]
