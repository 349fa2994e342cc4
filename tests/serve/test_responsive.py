"""One client cannot freeze `captioner serve` (a real uvicorn server in a subprocess): while a request decodes 16
lossless 3999 x 3999 WebPs (680 bytes each, 16 M pixels), GET /health keeps answering within a second; a client
that sends its headers a byte a second, or nothing at all, is disconnected after --header-timeout."""

import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from PIL import Image

from benchmarks.serve import free_port

pytestmark = pytest.mark.slow  # a server process and 16 large decodes: about 20 s


def big_webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (3999, 3999), (200, 30, 30)).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(trained_package):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "captioner",
        "serve",
        str(trained_package),
        "--port",
        str(port),
        "--device",
        "cpu",
        "--no-page",
        "--max-request-pixels",
        "300000000",
        "--header-timeout",
        "2",
        "--timeout",
        "60",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.3)
    yield url, port
    proc.terminate()
    proc.wait(20)


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "captionerboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: image/webp\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_health_answers_within_a_second_while_a_request_decodes_16_big_webps(server):
    url, _ = server
    body, kind = multipart([(f"big{i}.webp", big_webp()) for i in range(16)])
    answer: dict = {}

    def post() -> None:
        request = urllib.request.Request(f"{url}/caption", data=body, headers={"Content-Type": kind})
        with urllib.request.urlopen(request, timeout=120) as r:
            answer.update(status=r.status, rows=json.load(r)["results"])

    worker = threading.Thread(target=post)
    worker.start()
    slowest, checks = 0.0, 0
    while worker.is_alive():
        start = time.monotonic()
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert json.load(r)["status"] == "ok"
        slowest, checks = max(slowest, time.monotonic() - start), checks + 1
        time.sleep(0.05)
    worker.join()
    assert answer["status"] == 200 and len(answer["rows"]) == 16
    assert checks >= 10  # the decoding lasted long enough to be watched
    print(f"GET /health while 16 big WebPs decoded: {checks} checks, slowest {slowest * 1000:.0f} ms")
    assert slowest < 1.0, f"GET /health took {slowest:.2f} s while the request decoded"


@pytest.mark.parametrize("trickle", [True, False])  # a byte a second, or an idle connection that sends nothing
def test_a_slow_or_idle_client_is_disconnected_after_the_header_timeout(server, trickle):
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        start = time.monotonic()
        closed = None
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
            try:
                if trickle:
                    conn.sendall(bytes([byte]))
                conn.settimeout(1.0)
                if conn.recv(1) == b"":  # the server closed the connection
                    closed = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic() - start
                break
        assert closed is not None and closed < 2 + 1.5, "the connection outlived --header-timeout 2"
