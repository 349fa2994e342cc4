"""The one image pipeline: any mode to RGB, EXIF orientation, decompression-bomb limit, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from captioner.data.augment import hflip, swap_left_right
from captioner.data.images import ImageDecodeError, load_rgb


def save(img: Image.Image, path, fmt: str = "PNG", **kw) -> str:
    img.save(path, fmt, **kw)
    return str(path)


RED = Image.new("RGB", (8, 6), (200, 30, 30))


@pytest.mark.parametrize(
    ("mode", "fmt"), [("CMYK", "JPEG"), ("P", "PNG"), ("L", "PNG"), ("1", "PNG"), ("LA", "PNG"), ("RGBA", "PNG")]
)
def test_modes_become_rgb(mode, fmt, tmp_path):
    path = save(RED.convert(mode), tmp_path / f"x.{fmt.lower()}", fmt)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (8, 6)


def test_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert load_rgb(save(img, tmp_path / "a.png")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.info["transparency"] = 0
    assert load_rgb(save(img, tmp_path / "p.png", transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grayscale_is_rescaled(tmp_path):
    arr = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    out = np.asarray(load_rgb(save(Image.fromarray(arr), tmp_path / "g16.png")))
    assert out.shape == (8, 8, 3) and out.min() == 0 and out.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(img, tmp_path / "o.jpg", "JPEG", exif=exif.tobytes())
    assert load_rgb(path).size == (10, 20)


def test_decompression_bomb_is_refused(tmp_path):
    path = save(Image.new("L", (400, 400)), tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="160,000 exceeds|pixel limit"):
        load_rgb(path, max_pixels=100_000)


def test_bad_files_name_the_reason(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageDecodeError, match="text.png: cannot decode"):
        load_rgb(tmp_path / "text.png")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_rgb(tmp_path / "cut.jpg")
    with pytest.raises(ImageDecodeError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")


def test_flip_swaps_left_and_right_in_captions():
    assert swap_left_right("a dog on the left, a cat to the Right; leftover") == (
        "a dog on the right, a cat to the Left; leftover"
    )
    img = Image.new("RGB", (2, 1))
    img.putpixel((0, 0), (255, 0, 0))
    flipped, caps = hflip(img, ["red on the left"])
    assert flipped.getpixel((1, 0)) == (255, 0, 0) and caps == ["red on the right"]
