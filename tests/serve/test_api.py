"""The JSON API in process (FastAPI's TestClient): the rows of `captioner caption`, and a 4xx for bad input."""

import io
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from benchmarks.serve import header_only_png
from captioner.cli import main
from captioner.model import Captioner
from captioner.serve.api import Limits, Service, create_api
from captioner.serve.batcher import Batcher
from captioner.shapes.scenes import make_scene


@pytest.fixture(scope="module")
def loaded(trained_package):
    return Captioner.from_pretrained(trained_package)


@pytest.fixture
def client_for(loaded):
    """A factory of (TestClient, Service); every service's worker thread is stopped after the test (a live thread
    that has run torch ops slows the torch work of other threads down, here about 2.4x)."""
    services = []

    def make(**limits) -> tuple[TestClient, Service]:
        model, tok = loaded
        services.append(Service(model, tok, "tiny", Limits(**limits)))
        return TestClient(create_api(services[-1])), services[-1]

    yield make
    for service in services:
        service.batcher.stop()


def png(index: int) -> bytes:
    buf = io.BytesIO()
    make_scene("test", index).image.save(buf, "PNG")
    return buf.getvalue()


def test_rows_are_those_of_the_caption_command(client_for, trained_package, tmp_path):
    client, _ = client_for()
    files = []
    for i in range(3):
        (tmp_path / f"scene{i}.png").write_bytes(png(i))
        files.append(tmp_path / f"scene{i}.png")
    out = tmp_path / "rows.jsonl"
    assert (
        main(
            [
                "caption",
                str(trained_package),
                *map(str, files),
                "-o",
                str(out),
                "--workers",
                "0",
                "--num-beams",
                "2",
                "--num-return-sequences",
                "2",
            ]
        )
        == 0
    )
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    for row in expected:
        row["path"] = row["path"].rsplit("/", 1)[-1]
    upload = [("image", (f.name, f.read_bytes(), "image/png")) for f in files]
    answer = client.post("/caption", files=upload, params={"num_beams": 2, "num_return_sequences": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"] == expected
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["images"] == 3 and health["queue"] == 0


@pytest.mark.parametrize(
    ("body", "limits", "status", "says"),
    [
        ({"files": [("image", ("notes.png", b"hello", "image/png"))]}, {}, 400, "notes.png: cannot decode image"),
        ({"files": [("image", ("cut.png", png(0)[:200], "image/png"))]}, {}, 400, "cut.png: cannot decode image"),
        (
            {"files": [("image", ("bomb.png", header_only_png(40_000, 40_000), "image/png"))]},
            {},
            413,
            "decompression bomb",
        ),
        (
            {"files": [("image", ("big.png", header_only_png(5_000, 5_000), "image/png"))]},
            {},
            413,
            "big.png: 5000x5000 exceeds the 16,000,000-pixel limit",
        ),
        (
            {"files": [("image", ("big.png", png(0) + bytes(20_000), "image/png"))]},
            {"max_upload_bytes": 20_000},
            413,
            "the limit is 20,000",
        ),
        ({"files": [("photo", ("a.png", png(0), "image/png"))]}, {}, 400, "no file field named `image`"),
        ({"json": {"image": "a.png"}}, {}, 400, "multipart/form-data"),
        ({"files": [("image", ("a.png", png(0), "image/png"))], "params": {"num_beams": "two"}}, {}, 422, "num_beams"),
        ({"files": [("image", ("a.png", png(0), "image/png"))], "params": {"top_k": 0}}, {}, 422, "top_k=0"),
        ({"files": [("image", ("a.png", png(0), "image/png"))], "params": {"num_beams": 64}}, {}, 422, "at most 16"),
        ({"files": [("image", ("a.png", png(0), "image/png"))], "params": {"beams": 2}}, {}, 422, "unknown option"),
        # plain ASCII decimals only: Python's int() would take these as 16
        ({"files": [("image", ("a.png", png(0), "image/png"))], "params": {"num_beams": "1_6"}}, {}, 422, "1_6"),
        (
            {"files": [("image", ("a.png", png(0), "image/png"))], "params": {"num_beams": "\u0661\u0666"}},
            {},
            422,
            "num_beams",
        ),
        (
            {"files": [("image", ("a.png", png(0), "image/png"))], "params": {"temperature": "nan", "do_sample": 1}},
            {},
            422,
            "temperature",
        ),
        (
            {"files": [("image", ("a.png", png(0), "image/png"))], "params": [("num_beams", "2"), ("num_beams", "3")]},
            {},
            422,
            "num_beams is given 2 times",
        ),
        (
            {"files": [("image", ("a.png", png(0), "image/png")), ("image", ("b.png", png(1), "image/png"))]},
            {"max_request_pixels": 5000},
            413,
            "the 2 images hold 8,192 pixels; a request may hold 5,000",
        ),
        (
            {"files": [("image", ("a.png", png(0), "image/png"))], "params": {"length_penalty": "1e308"}},
            {},
            422,
            "length_penalty",
        ),
        (  # refused before anything counts them: counting 100,000 parameters would hold the event loop
            {"files": [("image", ("a.png", png(0), "image/png"))], "params": [("seed", "1")] * 500},
            {},
            422,
            "500 query parameters",
        ),
        (
            {"files": [("image", ("a.png", png(0), "image/png"))], "headers": {"content-length": "9" * 5000}},
            {},
            413,
            "the upload is 99999999999999999999 bytes",
        ),
    ],
)
def test_bad_input_is_a_4xx_that_says_why_and_the_server_stays_up(client_for, body, limits, status, says):
    client, _ = client_for(**limits)
    answer = client.post("/caption", **body)
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    good = client.post("/caption", files=[("image", ("ok.png", png(1), "image/png"))])
    assert good.status_code == 200 and len(good.json()["results"]) == 1


def test_an_upload_without_length_is_refused(client_for):
    client, _ = client_for()

    def chunks():
        yield b"--x\r\n"

    answer = client.post("/caption", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 411


def test_a_full_queue_is_503_with_retry_after_and_a_slow_answer_504(client_for):
    client, service = client_for(timeout_s=0.5)
    entered, release = threading.Event(), threading.Event()

    def blocked(images, generation):
        entered.set()
        release.wait(10)
        return service._run(images, generation)

    service.batcher.stop()
    service.batcher = Batcher(blocked, max_batch=1, max_wait_s=0, max_queue=1)
    upload = [("image", ("a.png", png(0), "image/png"))]
    answers = []

    def post() -> None:
        answers.append(client.post("/caption", files=upload))

    first = threading.Thread(target=post)
    first.start()
    assert entered.wait(10)  # the first request is on the model
    second = threading.Thread(target=post)
    second.start()
    deadline = time.monotonic() + 10
    while service.batcher.pending < 1:  # the second waits in the queue (a cancelled one stays there too)
        assert time.monotonic() < deadline, "the second request never reached the queue"
        time.sleep(0.01)
    refused = client.post("/caption", files=upload)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]
    for t in (first, second):
        t.join(10)
    assert sorted(a.status_code for a in answers) == [504, 504]  # neither was done within 0.5 s
    release.set()


def test_serve_on_a_taken_port_is_one_line_before_the_model_loads(capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "no/such-package-needed", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("captioner: error: ") and f"--port {port}" in err and "\n" not in err


def test_a_request_whose_decoding_outlasts_the_timeout_is_504_in_time(client_for):
    client, service = client_for(timeout_s=0.5)
    slow = service.preprocess

    def preprocess(data, name):  # a decode that takes 0.4 s an image
        time.sleep(0.4)
        return slow(data, name)

    service.preprocess = preprocess
    start = time.monotonic()
    answer = client.post("/caption", files=[("image", (f"{i}.png", png(i), "image/png")) for i in range(4)])
    assert answer.status_code == 504 and "decoding" in answer.json()["error"]
    assert time.monotonic() - start < 1.2  # not after all four images (1.6 s)


def test_health_and_the_api_docs_name_the_model_not_its_path(trained_package):
    from captioner.cli.serve import shown_name

    name = shown_name(str(trained_package))
    assert name == f"{trained_package.parent.name}/{trained_package.name}"
    assert shown_name("org/some-model") == "org/some-model"
    model, tok = Captioner.from_pretrained(trained_package)
    service = Service(model, tok, name, Limits())
    try:
        client = TestClient(create_api(service))
        for page in (client.get("/health").text, client.get("/openapi.json").text):
            assert name in page and str(trained_package.parent.parent) not in page
    finally:
        service.batcher.stop()


def test_the_api_docs_describe_post_caption(client_for):
    from captioner.decoding import GenerationConfig
    from captioner.options import specs

    client, _ = client_for()
    assert client.get("/api/docs").status_code == 200
    post = client.get("/openapi.json").json()["paths"]["/caption"]["post"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    files = body["properties"]["image"]["items"]
    assert body["required"] == ["image"] and files == {"type": "string", "format": "binary"}
    parameters = {p["name"]: p for p in post["parameters"]}
    assert list(parameters) == list(specs(GenerationConfig)) and all(p["in"] == "query" for p in parameters.values())
    assert parameters["num_beams"]["schema"] == {"type": "integer", "default": 1, "minimum": 1, "maximum": 16}
    assert parameters["temperature"]["schema"] == {"type": "number", "default": 1.0, "minimum": 1e-6, "maximum": 1e6}
    assert parameters["do_sample"]["schema"] == {"type": "boolean", "default": False}
    assert parameters["top_k"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10**9}  # unset by default
    assert {"200", "400", "413", "422", "503", "504"} <= set(post["responses"])
