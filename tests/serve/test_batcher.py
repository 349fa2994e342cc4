"""Dynamic batching: requests that arrive together run as one batch, never mixing decoding options."""

import threading
import time

import pytest

from captioner.serve.batcher import Batcher, QueueFull


def recording(delay: float = 0.0):
    batches = []

    def run(items, options):
        batches.append((list(items), options))
        time.sleep(delay)
        return [(item, options) for item in items]

    return run, batches


def test_requests_arriving_together_share_a_batch_and_get_their_own_result():
    run, batches = recording()
    batcher = Batcher(run, max_batch=8, max_wait_s=0.2)
    futures = [batcher.submit(i) for i in range(20)]
    assert [f.result(timeout=5)[0] for f in futures] == list(range(20))
    assert [len(items) for items, _ in batches] == [8, 8, 4]
    assert batcher.batch_sizes == {8: 2, 4: 1}
    batcher.stop()


def test_decoding_options_never_share_a_batch():
    run, batches = recording()
    batcher = Batcher(run, max_batch=32, max_wait_s=0.1)
    futures = [batcher.submit(i, options=f"beams={1 + i % 2}") for i in range(10)]
    assert [f.result(timeout=5) for f in futures] == [(i, f"beams={1 + i % 2}") for i in range(10)]
    assert sorted((sorted(items), opt) for items, opt in batches) == [
        ([0, 2, 4, 6, 8], "beams=1"),
        ([1, 3, 5, 7, 9], "beams=2"),
    ]
    batcher.stop()


def test_a_lone_request_waits_at_most_max_wait():
    run, _ = recording()
    batcher = Batcher(run, max_batch=32, max_wait_s=0.05)
    start = time.monotonic()
    batcher.submit("x").result(timeout=5)
    assert time.monotonic() - start < 1.0
    batcher.stop()


def test_batch_size_one_runs_every_request_alone():
    run, batches = recording()
    batcher = Batcher(run, max_batch=1, max_wait_s=0.05)
    for f in [batcher.submit(i) for i in range(5)]:
        f.result(timeout=5)
    assert [len(items) for items, _ in batches] == [1] * 5
    batcher.stop()


def test_a_full_queue_refuses_and_a_cancelled_request_is_skipped():
    release = threading.Event()
    seen = []

    def run(items, options):
        seen.extend(items)
        release.wait(5)
        return items

    batcher = Batcher(run, max_batch=1, max_wait_s=0, max_queue=2)
    first = batcher.submit("running")
    while batcher.pending:  # the worker has taken it
        time.sleep(0.01)
    waiting, cancelled = batcher.submit("waiting"), batcher.submit("cancelled")
    with pytest.raises(QueueFull, match="limit is 2"):
        batcher.submit("refused")
    assert cancelled.cancel()
    release.set()
    assert first.result(timeout=5) == "running" and waiting.result(timeout=5) == "waiting"
    time.sleep(0.1)
    assert seen == ["running", "waiting"]
    batcher.stop()


def test_an_error_reaches_every_caller_of_the_batch_and_the_worker_lives_on():
    calls = []

    def run(items, options):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    batcher = Batcher(run, max_batch=4, max_wait_s=0.1)
    failed = [batcher.submit(i) for i in range(3)]
    for f in failed:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(timeout=5)
    assert batcher.submit("after").result(timeout=5) == "after"
    batcher.stop()
