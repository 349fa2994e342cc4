"""Dynamic batching: requests that arrive within a few milliseconds of each other are captioned in one batch.

Callers (HTTP handlers, the page) `submit` one preprocessed image with its decoding options and get a Future. One
worker thread takes the oldest request, waits until `max_wait_s` after it arrived for up to `max_batch - 1` more
with the same decoding options, and runs them as one batch; under load the queue is already full when the worker
comes back, so batches form without waiting. A full queue refuses new requests (the API answers 503).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """The batcher holds `max_queue` requests already; try again shortly."""


@dataclass
class Request:
    item: Any  # what the run function needs for one request, e.g. an image
    options: Any  # passed to the run function with the batch; only requests with equal options share a batch
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


class Batcher:
    """Runs `run(items, options) -> results` (one result per item, in order) on batches of submitted requests."""

    def __init__(
        self,
        run: Callable[[list[Any], Any], Sequence[Any]],
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_s >= 0")
        self.run, self.max_batch, self.max_wait_s, self.max_queue = run, max_batch, max_wait_s, max_queue
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self.batch_sizes: Counter[int] = Counter()  # size -> batches run (GET /health reports it)
        self._thread = threading.Thread(target=self._loop, name="captioner-batcher", daemon=True)
        self._thread.start()

    def submit(self, item: Any, options: Any = None) -> Future:
        """Queue one request; its Future gets the result (or the run's exception). QueueFull when full."""
        request = Request(item, options)
        with self._cond:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (the limit is {self.max_queue})")
            self._queue.append(request)
            self._cond.notify()
        return request.future

    @property
    def pending(self) -> int:
        return len(self._queue)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _take(self) -> list[Request] | None:
        """The next batch: the oldest request and those after it with equal options, once the batch is full or
        the oldest has waited `max_wait_s`."""
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            first = self._queue[0]
            deadline = first.arrived + self.max_wait_s
            while sum(r.options == first.options for r in self._queue) < self.max_batch and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [r for r in self._queue if r.options == first.options][: self.max_batch]
            for r in batch:
                self._queue.remove(r)
        return [r for r in batch if r.future.set_running_or_notify_cancel()]  # a timed-out caller cancelled

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                results = self.run([r.item for r in batch], batch[0].options)
            except Exception as err:  # every waiting caller gets the error, the worker lives on
                for r in batch:
                    r.future.set_exception(err)
                continue
            for r, result in zip(batch, results, strict=True):
                r.future.set_result(result)
