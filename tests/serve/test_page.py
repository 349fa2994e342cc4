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
    text, rows, maps = caption_image(service, str(path), 3, 2, False, 1.0, 10)
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
        caption_image(service, str(path) if path else None, 1, 1, False, 1.0, 10)
