"""`captioner export-onnx --web` and `captioner serve --static`: the exported page in headless Chromium (Debian's,
driven by Playwright) captions three shapes images as `captioner caption` does, greedy, with every request to its
own origin, and says so for a file that is not an image; its tokenizer decoder gives `CaptionTokenizer.decode`'s
text. The images are drawn at the model's input size, so that the canvas's resize is the identity (its resampling
is not PIL's)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from benchmarks.serve import free_port
from captioner.cli import main
from captioner.export.web import ORT_FILES, PAGE_FILES, cache_folder, check_tokenizer
from captioner.serve.static import static_server
from captioner.shapes.scenes import make_scene
from tests.export.test_onnx import tiny_package
from tests.helpers import CHROMIUM

browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt install chromium)")
npm = pytest.mark.skipif(
    shutil.which("npm") is None and not cache_folder().is_dir(), reason="no npm to install onnxruntime-web with"
)


def test_the_static_server_sends_the_types_browsers_need(tmp_path):
    for name in ("a.mjs", "a.wasm", "index.html"):
        (tmp_path / name).write_bytes(b"x")
    with static_server(tmp_path, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        types = {}
        for name in ("a.mjs", "a.wasm", ""):
            with urllib.request.urlopen(f"{url}/{name}", timeout=5) as answer:
                types[name] = answer.headers["Content-Type"]
        server.shutdown()
    assert types == {"a.mjs": "text/javascript", "a.wasm": "application/wasm", "": "text/html"}


def test_the_static_server_serves_only_the_files_under_its_folder(tmp_path):
    root = tmp_path / "site"
    (root / "onnx").mkdir(parents=True)
    (root / "onnx" / "a.onnx").write_bytes(b"x")
    (root / ".env").write_text("secret")
    (tmp_path / "outside.txt").write_text("secret")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    with static_server(root, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        found = {}
        for path in ("onnx/a.onnx", "", "onnx/", ".env", "link.txt", "%2e%2e/outside.txt", "../outside.txt"):
            try:
                with urllib.request.urlopen(f"{url}/{path}", timeout=5) as answer:
                    found[path] = answer.status
            except urllib.error.HTTPError as err:
                found[path] = err.code
        server.shutdown()
    assert found == {"onnx/a.onnx": 200, **{p: 404 for p in found if p != "onnx/a.onnx"}}


def test_serve_static_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    assert main(["serve", "--static", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: --static ") and "no such folder" in err and err.count("\n") == 1


def test_web_without_onnxruntime_web_files_is_refused_before_the_export(tmp_path, tokenizer, capsys):
    package = tiny_package(tmp_path / "package", tokenizer, "gpt")
    (tmp_path / "dist").mkdir()
    argv = ["export-onnx", str(package), str(tmp_path / "out"), "--web", "--onnxruntime-web", str(tmp_path / "dist")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: --web needs onnxruntime-web's files: ") and ORT_FILES[0] in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_web_refuses_a_tokenizer_that_is_not_byte_level(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"decoder": {"type": "Metaspace"}, "model": {}}))
    with pytest.raises(ValueError, match="byte-level BPE tokenizers only; this one's decoder is Metaspace"):
        check_tokenizer(tmp_path / "tokenizer.json")


@pytest.fixture(scope="module")
def exported_page(talking_package, tmp_path_factory) -> Path:
    """The talking package's export with --web (npm installs onnxruntime-web into the cache the first time)."""
    out = tmp_path_factory.mktemp("web") / "export"
    assert main(["export-onnx", str(talking_package), str(out), "--web"]) == 0
    return out


@pytest.fixture(scope="module")
def static_url(exported_page):
    """`captioner serve --static` of the export, on a free port (a process: seconds to start, shared)."""
    port = free_port()
    command = [sys.executable, "-m", "captioner", "serve", "--static", str(exported_page), "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/web/", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"captioner serve --static did not serve: {proc.communicate()[0]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def scenes(folder: Path, size: tuple[int, int]) -> list[Path]:
    """Three shapes scenes as PNGs of exactly `size` (W, H), the model's input."""
    paths = []
    for index in (3, 7, 11):
        path = folder / f"scene{index}.png"
        make_scene("test", index).image.resize(size, Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def drop(page, path: Path) -> None:
    """Drop the file at `path` on the page's drop zone, as a drag from the desktop does."""
    data = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})


def own_origin(url: str, origin: str) -> bool:
    """Whether a request's `url` stays with `origin` (a blob: URL carries the origin that made it)."""
    parts = urlsplit(url.removeprefix("blob:"))
    return url.startswith("data:") or f"{parts.scheme}://{parts.netloc}" == origin


@pytest.mark.slow
@browser
@npm
def test_the_page_captions_images_as_the_caption_command_does_from_its_own_origin(
    exported_page, static_url, talking_package, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    from captioner.inference import caption
    from captioner.model import Captioner

    _, height, width = Captioner.from_pretrained(talking_package)[0].preprocessing.input_size
    images = scenes(tmp_path, (width, height))
    expected = [c.text for c in caption(images, model=talking_package, device="cpu")]
    assert all(expected) and len(set(expected)) > 1, "the fixture model should say something of each image"
    (tmp_path / "notes.txt").write_text("not an image")
    assert {p.name for p in (exported_page / "web").iterdir()} == {*PAGE_FILES, *ORT_FILES}
    screenshot = Path(os.environ.get("CAPTIONER_WEB_SCREENSHOT", tmp_path / "web_page.png"))
    requests: list[str] = []
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": 760, "height": 560})
        page.on("request", lambda request: requests.append(request.url))
        page.goto(f"{static_url}/web/")
        status = page.locator("#status")
        expect(status).to_contain_text("Model loaded", timeout=60_000)
        got = []
        for i, image in enumerate(images):
            if i == 1:
                drop(page, image)
            else:
                page.locator("#file").set_input_files(str(image))
            expect(status).to_have_text(f"Captioned {image.name}.", timeout=60_000)
            got.append(page.locator("#caption").text_content())
        page.screenshot(path=str(screenshot))
        page.locator("#file").set_input_files(str(tmp_path / "notes.txt"))
        expect(page.locator("#status.error")).to_contain_text("notes.txt is not an image", timeout=20_000)
        assert page.locator("#caption").text_content() == ""
        page.goto(f"{static_url}/web/?model=quantized")  # the int8 graphs
        expect(status).to_contain_text("Model loaded (int8)", timeout=60_000)
        page.locator("#file").set_input_files(str(images[0]))
        expect(status).to_have_text(f"Captioned {images[0].name}.", timeout=60_000)
        assert page.locator("#caption").text_content()
        chromium.close()
    assert got == expected
    assert requests and all(own_origin(url, static_url) for url in requests), requests
    assert f"{static_url}/onnx/decoder_model_merged.onnx" in requests
    assert f"{static_url}/onnx/decoder_model_merged_quantized.onnx" in requests
    assert 10_000 < screenshot.stat().st_size < 200_000


@pytest.mark.slow
@browser
@npm
def test_the_pages_decoder_gives_the_tokenizers_text(static_url, talking_package):
    from playwright.sync_api import sync_playwright

    from captioner.package import read_tokenizer

    tok = read_tokenizer(talking_package)
    ids = tok.tokenizer.encode("a small red café, ünï 🎨", add_special_tokens=False).ids
    cases = [ids, ids[:-1], [tok.bos_id, *ids[:3], tok.pad_id, *ids[3:], tok.eos_id, *ids[:2]]]  # cut mid-emoji
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = chromium.new_page()
        page.goto(f"{static_url}/web/")
        got = page.evaluate(
            """async ([module, cases]) => {
                const { byteLevelDecoder } = await import(module);
                const json = async (name) => (await fetch(`../${name}`)).json();
                const decode = byteLevelDecoder(await json("tokenizer.json"), await json("special_tokens.json"));
                return cases.map(decode);
            }""",
            [f"{static_url}/web/caption.mjs", cases],
        )
        chromium.close()
    assert got == [tok.decode(c) for c in cases]
    assert got[0] == "a small red café, ünï 🎨" and got[1] == "a small red café, ünï "
