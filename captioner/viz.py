"""Cross-attention maps: which image patches each generated word looked at, as tensors and as PNG figures."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from captioner.model import Captioner
from captioner.tokenizer import CaptionTokenizer


@torch.inference_mode()
def cross_attention_maps(
    model: Captioner,
    images: torch.Tensor | None,
    tokens: list[list[int]],
    bos_id: int,
    layer: int | None = -1,
    memory: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Per image, (T, h, w) maps for its T generated tokens: the weights (mean over heads) with which the
    position that produced each token attended to the image patches; `layer` picks a cross-attention layer (an
    index into the blocks that have one, `model.decoder.cross_index`; default the last), None averages them. Rows
    sum to 1. Pass `memory` (B, N, D) from `model.encode` to reuse it."""
    if memory is None:
        if images is None:
            raise ValueError("cross_attention_maps: pass the images or their memory")
        memory = model.encode(images)  # (B, N, D)
    kv = model.image_kv(memory)
    T = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), T + 1), bos_id, dtype=torch.long, device=memory.device)
    for i, t in enumerate(tokens):
        ids[i, 1 : len(t) + 1] = torch.tensor(t, dtype=torch.long)
    attention: list[torch.Tensor] = []
    model.decoder.hidden(ids[:, :T], kv, attention=attention)  # position t produced token t + 1
    stacked = torch.stack(attention).mean(dim=2)  # (L, B, T, N): L cross-attention layers, mean over heads
    maps = stacked.mean(0) if layer is None else stacked[layer]  # (B, T, N)
    h, w = patch_grid(model, maps.size(-1))
    return [maps[i, : len(t)].float().reshape(len(t), h, w).cpu() for i, t in enumerate(tokens)]


def patch_grid(model: Captioner, n: int) -> tuple[int, int]:
    grid = getattr(getattr(model.encoder.backbone, "patch_embed", None), "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n:
        return int(grid[0]), int(grid[1])
    side = int(math.isqrt(n))
    return (side, n // side)


def words(tokenizer: CaptionTokenizer, tokens: list[int]) -> list[tuple[str, list[int]]]:
    """Group byte-level BPE tokens into words: (word, token positions); a token starting with 'Ġ' starts a word."""
    groups: list[tuple[str, list[int]]] = []
    for pos, tok in enumerate(tokens):
        piece = tokenizer.tokenizer.id_to_token(tok) or ""
        if not groups or piece.startswith("Ġ"):
            groups.append(("", [pos]))
        else:
            groups[-1][1].append(pos)
    return [(tokenizer.decode([tokens[p] for p in ps]).strip(), ps) for _, ps in groups]


def word_maps(tokenizer: CaptionTokenizer, tokens: list[int], maps: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(word, (h, w) map) pairs, a word's map the mean of its tokens' maps."""
    return [(w, maps[ps].mean(0)) for w, ps in words(tokenizer, tokens) if w]


def _heat(values: np.ndarray) -> np.ndarray:
    """A simple blue-to-red colour map for values in [0, 1] -> (h, w, 3) uint8."""
    v = np.clip(values, 0, 1)[..., None]
    blue, yellow, red = np.array([30, 60, 200]), np.array([250, 220, 40]), np.array([220, 30, 30])
    rgb = np.where(v < 0.5, blue + (yellow - blue) * (v * 2), yellow + (red - yellow) * (v * 2 - 1))
    return rgb.astype(np.uint8)


def overlay(image: Image.Image, attention: torch.Tensor, size: int = 128) -> Image.Image:
    """The image at `size` x `size` with an (h, w) attention map over it as a heatmap (scaled to its maximum)."""
    base = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    values = attention.numpy() / max(float(attention.max()), 1e-8)
    heat = Image.fromarray(_heat(values)).resize((size, size), Image.Resampling.NEAREST)
    return Image.blend(base, heat, 0.5)


def attention_figure(image: Image.Image, panels: list[tuple[str, torch.Tensor]], size: int = 128) -> Image.Image:
    """The image, then one panel per word with its heatmap overlaid, in rows of 6."""
    base = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    tiles = [("(image)", base)] + [(word, overlay(image, m, size)) for word, m in panels]
    cols = min(6, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    fig = Image.new("RGB", (cols * size, rows * (size + 16)), "white")
    draw = ImageDraw.Draw(fig)
    for i, (word, tile) in enumerate(tiles):
        x, y = (i % cols) * size, (i // cols) * (size + 16)
        fig.paste(tile, (x, y))
        draw.text((x + 4, y + size + 2), word[:20], fill="black")
    return fig


def caption_grid(images: list[Image.Image], captions: list[str], references: list[str], size: int = 160) -> Image.Image:
    """Images in rows of 4, each with the model's caption under it and the reference below that (grey)."""
    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    line = 12
    text_h = 6 * line  # up to 3 wrapped lines for the caption, 3 for the reference
    fig = Image.new("RGB", (cols * size, rows * (size + text_h)), "white")
    draw = ImageDraw.Draw(fig)
    for i, (im, caption, ref) in enumerate(zip(images, captions, references, strict=True)):
        x, y = (i % cols) * size, (i // cols) * (size + text_h)
        fig.paste(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), (x, y))
        lines = [(t, "black") for t in _wrap(caption or "(empty)", size)] + [(t, "grey") for t in _wrap(ref, size)]
        for n, (text, colour) in enumerate(lines[:6]):
            draw.text((x + 3, y + size + 1 + n * line), text, fill=colour)
    return fig


def _wrap(text: str, width: int, char_px: int = 6) -> list[str]:
    """Words into lines that fit `width` pixels of PIL's default font (about 6 px a character), at most 3."""
    out: list[str] = []
    for word in text.split():
        if out and len(out[-1]) + 1 + len(word) <= width // char_px:
            out[-1] += " " + word
        else:
            out.append(word)
    return out[:3]


def attention_file_name(path: str) -> str:
    """`a/x.png` -> `x.<8 hex digits of the full path>.attention.png`: two images named alike never share a figure."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"{Path(path).stem}.{digest}.attention.png"


def save_attention_figures(
    model: Captioner,
    tokenizer: CaptionTokenizer,
    images: torch.Tensor,
    paths: list[str],
    tokens: list[list[int]],
    directory: Path,
    layer: int | None = -1,
    memory: torch.Tensor | None = None,
) -> list[Path]:
    """One PNG per image in `directory`, named after the image file."""
    from captioner.data.images import load_rgb

    directory.mkdir(parents=True, exist_ok=True)
    maps = cross_attention_maps(
        model, images, [t or [tokenizer.eos_id] for t in tokens], tokenizer.bos_id, layer, memory
    )
    written = []
    for path, toks, m in zip(paths, tokens, maps, strict=True):
        out = directory / attention_file_name(path)
        attention_figure(load_rgb(path), word_maps(tokenizer, toks, m) if toks else []).save(out)
        written.append(out)
    return written
