"""The page's captioning function without a browser: the same caption as the API, and gr.Error for bad input."""

import gradio as gr
import pytest

from captioner.model import Captioner
from captioner.serve.api import Limits, Service
from captioner.serve.page import caption_image
from captioner.shapes.scenes import make_scene


@pytest.fixture
def service(trained_package):
    model, tok = Captioner.from_pretrained(trained_package)
    service = Service(model, tok, "tiny", Limits())
    yield service
    service.batcher.stop()


def test_caption_n_best_and_one_map_per_word(service, tmp_path):
    path = tmp_path / "scene.png"
    make_scene("test", 2).image.save(path)
    text, rows, maps = caption_image(
        service, str(path), {"num_beams": 3.0, "num_return_sequences": 2.0, "max_new_tokens": 10.0}
    )
    assert len(rows) == 2 and rows[0][0] == text and rows[0][1] >= rows[1][1]
    assert len(maps) == len(text.split()) and all(im.size == (192, 192) for im, _ in maps)


@pytest.mark.parametrize(
    ("name", "data", "says"),
    [(None, None, "drop or pick an image"), ("notes.png", b"hello", "notes.png: cannot decode")],
)
def test_bad_input_is_a_message_on_the_page(service, tmp_path, name, data, says):
    path = None
    if name:
        path = tmp_path / name
        path.write_bytes(data)
    with pytest.raises(gr.Error, match=says):
        caption_image(service, str(path) if path else None, {"max_new_tokens": 10})


def test_the_controls_are_the_options_that_declare_one(service):
    from captioner.decoding import GenerationConfig
    from captioner.options import specs
    from captioner.serve.page import ON_PAGE, create_page, page_generation

    declared = [name for name, spec in specs(GenerationConfig).items() if spec.option.control is not None]
    assert list(ON_PAGE) == declared and {"num_beams", "do_sample", "temperature", "max_new_tokens"} <= set(declared)
    page = create_page(service)
    shown = {b.elem_id: b for b in page.blocks.values() if b.elem_id in declared}
    assert set(shown) == set(declared)
    assert isinstance(shown["do_sample"], gr.Checkbox) and shown["num_beams"].maximum == 16  # the server's cap
    assert shown["max_new_tokens"].maximum == shown["max_new_tokens"].value == service.model.config.block_size - 1
    assert page_generation({"num_beams": 2.0, "num_return_sequences": 5.0}).num_return_sequences == 2
    assert page_generation({"num_beams": 4.0, "do_sample": True}).num_beams == 1
