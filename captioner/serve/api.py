"""The JSON HTTP API: `POST /caption` (one or more images, multipart), `GET /health`; dynamic batching behind it.

    curl -F image=@photo.jpg -F image=@other.png 'http://127.0.0.1:7860/caption?num_beams=3'

answers {"results": [row, ...]}, one row per image in order, each the row `captioner caption` writes (path = the
upload's file name). Bad input is a 4xx whose JSON says what and what to do, and the server stays up: 400 for a
file that is not an image or is truncated, 411 without Content-Length, 413 for an upload over the size limit, an
image over the pixel limit (decompression bombs) or a request whose images hold more pixels than the request
limit, 422 for a bad, unknown or repeated decoding option, 503 with Retry-After when the queue is full, 504 when
the request is not answered within the request timeout (reading the body, decoding and captioning all count).

One client cannot freeze the server: images are decoded in worker threads (at most `decode_threads` at a time),
never on the event loop, so `GET /health` and other requests are answered while a request decodes; a request's
images are measured from their headers before any is decoded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import anyio
import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile

from captioner.data.images import ImageDecodeError, ImageTooLarge, image_size, load_rgb
from captioner.generate import GenerationConfig
from captioner.inference import Caption, caption_batch
from captioner.model import Captioner
from captioner.options import from_text, specs
from captioner.runs.writers import caption_row
from captioner.serve.batcher import Batcher, QueueFull
from captioner.serve.limits import Limits
from captioner.serve.schema import caption_openapi
from captioner.tokenizer import CaptionTokenizer

MAX_IMAGES = 64  # per request
# what this server takes of a decoding option, inside the option's own range: one request must not hold the model
# for long (the API refuses more with 422, the page's sliders end there)
CAPS = {"num_beams": 16, "num_return_sequences": 16}
OPTIONS = specs(GenerationConfig)  # the query parameters of POST /caption


class Service:
    """The model, its tokenizer and the batcher: what the API and the page share."""

    def __init__(self, model: Captioner, tokenizer: CaptionTokenizer, name: str, limits: Limits) -> None:
        self.model, self.tokenizer, self.name, self.limits = model, tokenizer, name, limits
        # the model's eval transform in two stages: resize/crop per request, to-tensor + normalise once per batch in
        # the model's thread (equal bit for bit; small torch ops per request would fight over the cores)
        self.resize, self.to_batch = model.preprocessing.eval_stages()
        self.device = model.device
        self.batcher = Batcher(self._run, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue)
        self._decoders: anyio.CapacityLimiter | None = None  # made on the event loop, at the first request

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

    async def in_worker(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in a worker thread, at most `decode_threads` at a time: off the event loop."""
        if self._decoders is None:
            self._decoders = anyio.CapacityLimiter(self.limits.decode_threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._decoders)

    def submit(self, image: torch.Tensor, generation: GenerationConfig):  # a concurrent Future
        return self.batcher.submit(image, generation)


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def generation_from(query: list[tuple[str, str]]) -> GenerationConfig:
    """Decoding options from the query's (name, value) pairs (captioner.options: plain ASCII numbers); ValueError
    naming an unknown, repeated or bad one, or one over this server's cap (`CAPS`)."""
    if len(query) > len(OPTIONS):  # before counting: a query of 100,000 parameters is refused at once
        raise ValueError(f"{len(query)} query parameters; there are {len(OPTIONS)} options, each given once")
    counts = Counter(name for name, _ in query)
    repeated = sorted(n for n, c in counts.items() if c > 1)
    if repeated:
        raise ValueError(f"{repeated[0]} is given {counts[repeated[0]]} times; give each option once")
    generation = from_text(GenerationConfig, dict(query))
    for name, cap in CAPS.items():
        if getattr(generation, name) > cap:
            raise ValueError(f"{name}={getattr(generation, name)}: at most {cap} here")
    return generation


def create_api(service: Service) -> FastAPI:
    app = FastAPI(title="captioner", description=f"Captions from {service.name}", docs_url="/api/docs")
    limits = service.limits

    @app.get("/health")
    def health() -> dict[str, Any]:
        sizes = service.batcher.batch_sizes
        batches = sum(sizes.values())
        return {
            "status": "ok",
            "model": service.name,
            "device": str(service.device),
            "queue": service.batcher.pending,
            "batches": batches,
            "images": sum(k * v for k, v in sizes.items()),
            "mean_batch_size": round(sum(k * v for k, v in sizes.items()) / max(batches, 1), 2),
        }

    # the handler reads the request itself (the size before the body, strict numbers, repeated options); its
    # parameters and upload are described from the same declarations (captioner.serve.schema)
    @app.post("/caption", openapi_extra=caption_openapi(OPTIONS, CAPS, MAX_IMAGES))
    async def caption(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is None:
            return error(411, "send Content-Length (an upload of known size)")
        if not (length.isascii() and length.isdigit() and len(length) <= 20) or int(length) > limits.max_upload_bytes:
            return error(413, f"the upload is {length[:20]} bytes; the limit is {limits.max_upload_bytes:,}")
        try:
            generation = generation_from(request.query_params.multi_items())
        except ValueError as err:
            return error(422, str(err))
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error(400, "send the images as multipart/form-data file fields named `image`")
        try:  # --timeout covers all of it: reading the body, decoding, captioning
            return await asyncio.wait_for(answer(request, generation), limits.timeout_s)
        except TimeoutError:
            return error(
                504,
                f"not answered within {limits.timeout_s:g} s (reading, decoding and captioning); retry, "
                "or send fewer or smaller images",
            )

    async def answer(request: Request, generation: GenerationConfig) -> JSONResponse:
        try:
            form = await request.form(max_files=MAX_IMAGES, max_fields=len(OPTIONS) + MAX_IMAGES)
        except Exception as err:  # starlette's parser raises several kinds for a broken body
            return error(400, f"the multipart body cannot be read: {err}")
        try:
            return await answer_form(form, generation)
        finally:  # the uploads' spooled temporary files, whatever the answer (or a timeout cancelling it)
            await form.close()

    async def answer_form(form: FormData, generation: GenerationConfig) -> JSONResponse:
        uploads = [v for v in form.getlist("image") if isinstance(v, UploadFile)]  # not a plain text field
        if not uploads:
            return error(400, "no file field named `image`: curl -F image=@photo.jpg URL/caption")
        names = [u.filename or "image" for u in uploads]
        data = [await u.read() for u in uploads]
        try:
            sizes = await service.in_worker(lambda: [image_size(d, n) for d, n in zip(data, names, strict=True)])
            pixels = sum(w * h for w, h in sizes)
            if pixels > limits.max_request_pixels:
                return error(
                    413,
                    f"the {len(sizes)} images hold {pixels:,} pixels; a request may hold "
                    f"{limits.max_request_pixels:,}: send fewer or smaller images",
                )
            images = [await service.in_worker(service.preprocess, d, n) for d, n in zip(data, names, strict=True)]
        except ImageDecodeError as err:
            return error(413 if isinstance(err, ImageTooLarge) else 400, str(err))
        futures = []
        try:
            for image in images:
                futures.append(service.submit(image, generation))
            captions = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except QueueFull as err:
            return error(503, f"busy: {err}; retry shortly", **{"Retry-After": "1"})
        finally:  # a full queue, or the timeout cancelling this task: the queued images are not captioned
            for f in futures:
                f.cancel()
        return JSONResponse({"results": [caption_row(n, c) for n, c in zip(names, captions, strict=True)]})

    return app
