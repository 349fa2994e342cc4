"""The JSON HTTP API: `POST /caption` (one or more images, multipart), `GET /health`; dynamic batching behind it.

    curl -F image=@photo.jpg -F image=@other.png 'http://127.0.0.1:7860/caption?num_beams=3'

answers {"results": [row, ...]}, one row per image in order, each the row `captioner caption` writes (path = the
upload's file name). Bad input is a 4xx whose JSON says what and what to do, and the server stays up: 400 for a
file that is not an image or is truncated, 411 without Content-Length, 413 for an upload over the size limit or an
image over the pixel limit (decompression bombs), 422 for a bad decoding option, 503 with Retry-After when the
queue is full, 504 when the captions are not ready within the request timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from captioner.data.images import ImageDecodeError, ImageTooLarge, load_rgb
from captioner.generate import GenerationConfig
from captioner.inference import Caption, caption_batch, caption_row
from captioner.model import Captioner
from captioner.serve.batcher import Batcher, QueueFull
from captioner.tokenizer import CaptionTokenizer

# the decoding options a request may set (query parameters, named as for `captioner caption`)
OPTIONS = {f.name: f.type for f in fields(GenerationConfig)}
MAX_IMAGES = 64  # per request
MAX_BEAMS = 16
INLINE_DECODE_BYTES = 256 * 1024  # uploads up to this size are decoded on the event loop (well under 10 ms)


@dataclass
class Limits:
    max_upload_bytes: int = 10 * 2**20  # the whole request body
    max_pixels: int = 16_000_000  # per image: larger ones are refused (decompression bombs)
    timeout_s: float = 30.0  # a request whose captions are not ready by then gets 504
    max_queue: int = 256  # requests waiting for the model; more get 503
    max_batch: int = 32  # images captioned together (1: no dynamic batching)
    max_wait_ms: float = 5.0  # how long the oldest request waits for others to join its batch


class Service:
    """The model, its tokenizer and the batcher: what the API and the page share."""

    def __init__(self, model: Captioner, tokenizer: CaptionTokenizer, name: str, limits: Limits) -> None:
        self.model, self.tokenizer, self.name, self.limits = model, tokenizer, name, limits
        # the model's eval transform in two stages: resize/crop per request, to-tensor + normalise once per batch in
        # the model's thread (equal bit for bit; small torch ops per request would fight over the cores)
        self.resize, self.to_batch = model.preprocessing.eval_stages()
        self.device = next(model.parameters()).device
        self.batcher = Batcher(self._run, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue)

    def _run(self, images: list[torch.Tensor], generation: GenerationConfig) -> list[Caption]:
        batch = self.to_batch(torch.stack(images)).to(self.device)  # (B, H, W, 3) uint8 -> (B, 3, H, W)
        return caption_batch(self.model, self.tokenizer, batch, generation)

    def preprocess(self, data: bytes, name: str) -> torch.Tensor:
        """Upload bytes -> (H, W, 3) uint8 at the model's input size, decoded as `captioner caption` decodes a
        file; ImageDecodeError names the upload."""
        try:
            return torch.from_numpy(np.array(self.resize(load_rgb(data, self.limits.max_pixels))))
        except ImageDecodeError as err:  # the same kind, naming the upload instead of "<bytes>"
            raise type(err)(str(err).replace("<bytes>", name, 1)) from err

    def submit(self, image: torch.Tensor, generation: GenerationConfig):  # noqa: ANN201 - a concurrent Future
        return self.batcher.submit(image, generation)


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def generation_from(query: dict[str, str]) -> GenerationConfig:
    """Decoding options from query parameters; ValueError naming an unknown or bad one."""
    values: dict[str, Any] = {}
    for name, text in query.items():
        if name not in OPTIONS:
            raise ValueError(f"unknown option {name!r}; the options are {', '.join(OPTIONS)}")
        kind = str(OPTIONS[name])
        try:
            if "bool" in kind:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                values[name] = text.lower() in ("true", "1")
            else:
                values[name] = int(text) if "int" in kind and "float" not in kind else float(text)
        except ValueError as err:
            raise ValueError(f"{name}={text!r} is not a {kind.split('|')[0].strip()}") from err
    generation = GenerationConfig(**values)
    generation.validate()
    for name in ("num_beams", "num_return_sequences"):  # one request must not hold the model for long
        if getattr(generation, name) > MAX_BEAMS:
            raise ValueError(f"{name}={getattr(generation, name)}: at most {MAX_BEAMS} here")
    return generation


def create_api(service: Service) -> FastAPI:
    app = FastAPI(title="captioner", description=f"Captions from {service.name}", docs_url="/api/docs")
    limits = service.limits

    @app.get("/health")
    def health() -> dict[str, Any]:
        sizes = service.batcher.batch_sizes
        batches = sum(sizes.values())
        return {
            "status": "ok", "model": service.name, "device": str(service.device), "queue": service.batcher.pending,
            "batches": batches, "images": sum(k * v for k, v in sizes.items()),
            "mean_batch_size": round(sum(k * v for k, v in sizes.items()) / max(batches, 1), 2),
        }  # fmt: skip

    @app.post("/caption")
    async def caption(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is None:
            return error(411, "send Content-Length (an upload of known size)")
        if not length.isdigit() or int(length) > limits.max_upload_bytes:
            return error(413, f"the upload is {length} bytes; the limit is {limits.max_upload_bytes:,}")
        try:
            generation = generation_from(dict(request.query_params))
        except ValueError as err:
            return error(422, str(err))
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error(400, "send the images as multipart/form-data file fields named `image`")
        try:
            form = await request.form(max_files=MAX_IMAGES, max_fields=len(OPTIONS) + MAX_IMAGES)
        except Exception as err:  # noqa: BLE001 - starlette's parser raises several kinds for a broken body
            return error(400, f"the multipart body cannot be read: {err}")
        uploads = [v for v in form.getlist("image") if hasattr(v, "read")]
        if not uploads:
            return error(400, "no file field named `image`: curl -F image=@photo.jpg URL/caption")
        images = []
        for upload in uploads:
            data, name = await upload.read(), upload.filename or "image"
            try:  # a small file is decoded here (a thread hop costs more); a large one in a worker thread
                small = len(data) <= INLINE_DECODE_BYTES
                images.append(
                    service.preprocess(data, name) if small else await run_in_threadpool(service.preprocess, data, name)
                )
            except ImageDecodeError as err:
                return error(413 if isinstance(err, ImageTooLarge) else 400, str(err))
        futures = []
        try:
            for image in images:
                futures.append(service.submit(image, generation))
        except QueueFull as err:
            for f in futures:
                f.cancel()
            return error(503, f"busy: {err}; retry shortly", **{"Retry-After": "1"})
        try:
            captions = await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), limits.timeout_s
            )
        except TimeoutError:
            for f in futures:
                f.cancel()
            return error(504, f"the captions were not ready within {limits.timeout_s:g} s; retry, or send fewer images")
        names = [u.filename or "image" for u in uploads]
        return JSONResponse({"results": [caption_row(n, c) for n, c in zip(names, captions, strict=True)]})

    return app
