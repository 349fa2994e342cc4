"""The server's limits, with their defaults: `captioner serve`'s flags start from these (no web framework import,
so that the command can say that the serve extra is missing)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Limits:
    """What one server takes, and how it batches."""

    max_upload_bytes: int = 10 * 2**20  # the whole request body
    # per image: larger ones are refused (decompression bombs). Less than the 64 M that `captioner caption` takes
    # (`captioner.options.MAX_IMAGE_PIXELS`): uploads come from anyone and are decoded `decode_threads` at a time
    # (48 MB of RGB each at 16 M pixels, 192 MB at 64 M), and a photo of more rarely fits the 10 MiB upload anyway
    max_pixels: int = 16_000_000
    max_request_pixels: int = 128_000_000  # all images of one request together, measured before decoding
    timeout_s: float = 30.0  # a request not answered by then (body, decoding, captions) gets 504
    max_queue: int = 256  # requests waiting for the model; more get 503
    max_batch: int = 32  # images captioned together (1: no dynamic batching)
    max_wait_ms: float = 5.0  # how long the oldest request waits for others to join its batch
    decode_threads: int = os.cpu_count() or 2  # images decoded at once, over all requests
