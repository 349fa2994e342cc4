"""The web page (Gradio): drop or pick an image, see its caption, the n-best list with scores, and where each
word looked (its cross-attention map over the image); decoding controls beside it, one per `GenerationConfig` field
that declares a page control (`captioner.options.Control`). It captions through the same batcher as the API, so
page users and API clients share batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import torch

from captioner.data.images import ImageDecodeError, load_rgb
from captioner.generate import GenerationConfig
from captioner.options import Spec, specs
from captioner.serve.api import CAPS, Service
from captioner.serve.batcher import QueueFull
from captioner.viz import cross_attention_maps, overlay, word_maps

# the decoding options the page shows, in field order
ON_PAGE = {name: spec for name, spec in specs(GenerationConfig).items() if spec.option.control is not None}


def control(spec: Spec, caps: dict[str, int]) -> gr.components.Component:
    """A checkbox or a slider for `spec`; a slider without its own end ends where the option's range or `caps` do."""
    shown, option = spec.option.control, spec.option
    if shown is None:
        raise ValueError(f"option {spec.name} has no control on the page")
    if spec.kind is bool:
        return gr.Checkbox(value=option.default, label=shown.label, info=option.help, elem_id=spec.name)
    ends = [end for end in (option.high, caps.get(spec.name)) if end is not None]
    high = shown.high if shown.high is not None else min(ends)
    value = high if option.default is None else option.default  # unset: as far as allowed (max_new_tokens)
    return gr.Slider(
        shown.low, high, value=value, step=shown.step, label=shown.label, info=option.help, elem_id=spec.name
    )


def create_page(service: Service) -> gr.Blocks:
    caps = {**CAPS, "max_new_tokens": service.model.config.block_size - 1}
    with gr.Blocks(title=f"captioner · {service.name}") as page:
        gr.Markdown(f"## captioner\nModel `{service.name}`. Drop an image, or pick one, and press Caption.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"], elem_id="image"
                )
                with gr.Accordion("Decoding", open=False):
                    controls = [control(spec, caps) for spec in ON_PAGE.values()]
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column():
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                table = gr.Dataframe(
                    headers=["caption", "score"],
                    label="n-best",
                    interactive=False,
                    wrap=True,
                    column_widths=["82%", "18%"],
                    elem_id="nbest",
                )
                maps = gr.Gallery(label="Cross-attention of each word", columns=4, height="auto", elem_id="maps")

        def clicked(path: str | None, *values: Any) -> tuple[str, list[list[Any]], list[tuple[Any, str]]]:
            return caption_image(service, path, dict(zip(ON_PAGE, values, strict=True)))

        button.click(clicked, [image, *controls], [caption, table, maps], api_visibility="private")
    return page


def page_generation(values: dict[str, Any]) -> GenerationConfig:
    """The controls' values (sliders give floats) as decoding options: sampling takes one beam, and beam search
    returns at most as many captions as it has beams."""
    options = {name: round(v) if ON_PAGE[name].kind is int else ON_PAGE[name].kind(v) for name, v in values.items()}
    if options.get("do_sample"):
        options["num_beams"] = 1
    else:
        n_best = options.get("num_return_sequences", 1)
        options["num_return_sequences"] = min(n_best, options.get("num_beams", 1))
    return GenerationConfig(**options)


def caption_image(
    service: Service, path: str | None, values: dict[str, Any]
) -> tuple[str, list[list[Any]], list[tuple[Any, str]]]:
    """One image from the page and the controls' values by option name -> (caption, n-best rows, (overlay, word) per
    word); gr.Error for bad input."""
    if not path:
        raise gr.Error("drop or pick an image first")
    try:
        generation = page_generation(values)
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
