"""THE image loader for every source: Pillow decode, EXIF orientation, any mode to RGB, a decompression-bomb limit;
and THE image-file dataset whose bad files become error rows instead of exceptions."""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; larger files are refused as possible decompression bombs


class ImageDecodeError(ValueError):
    """An image that cannot be used: unreadable, truncated, not an image, or too large."""


class ImageTooLarge(ImageDecodeError):
    """An image over the pixel limit, or one Pillow refuses as a possible decompression bomb."""


def load_rgb(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file (or its bytes) to an RGB image with its EXIF orientation applied.

    Handles every Pillow mode: CMYK, palette (with transparency), alpha (composited on white), 16/32-bit
    integer and float grayscale (rescaled to 8 bits), 1-bit. Raises `ImageDecodeError` naming the reason.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        _check_regular_file(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                if img.width * img.height > max_pixels:
                    raise ImageTooLarge(f"{name}: {img.width}x{img.height} exceeds the {max_pixels:,}-pixel limit")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"{name}: refused as a possible decompression bomb ({err})") from err
    except FileNotFoundError as err:
        raise ImageDecodeError(f"{name}: file not found") from err
    except Exception as err:  # Pillow raises many types for bad files
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the data", str(err))  # bytes: no object address
        raise ImageDecodeError(f"{name}: cannot decode image ({type(err).__name__}: {reason})") from err


def image_size(data: bytes, name: str = "<bytes>") -> tuple[int, int]:
    """(width, height) from an image's header, without decoding its pixels; ImageDecodeError when the bytes are
    not an image Pillow can open (ImageTooLarge for one it refuses as a decompression bomb)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_rgb applies the limit
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{name}: refused as a possible decompression bomb ({err})") from err
    except Exception as err:  # Pillow raises many types for bad files
        raise ImageDecodeError(f"{name}: cannot decode image ({type(err).__name__})") from err


def _check_regular_file(path: str | Path) -> None:
    """Only regular files are opened: a FIFO would block forever, a device could be endless."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as err:
        raise ImageDecodeError(f"{path}: file not found") from err
    except OSError as err:
        raise ImageDecodeError(f"{path}: cannot be read ({err.strerror})") from err
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ImageDecodeError(f"{path}: {kind}; only image files are read")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # high bit depth grayscale: rescale to 0..255
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, P, L, 1


class ImageFiles(Dataset):
    """Image files decoded and transformed one per item (in DataLoader workers): {"index", "path", "image"}, or
    {"index", "path", "error"} for a file that cannot be used. Serves `caption`, `evaluate` and the feature cache."""

    def __init__(
        self,
        paths: list[str],
        transform: Callable[[Image.Image], torch.Tensor],
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.paths, self.transform, self.max_pixels = paths, transform, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        try:
            return {"index": i, "path": path, "image": self.transform(load_rgb(path, self.max_pixels))}
        except ImageDecodeError as err:
            return {"index": i, "path": path, "error": str(err)}
