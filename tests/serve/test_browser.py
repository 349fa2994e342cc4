"""`captioner serve` in a real browser: headless Chromium (Debian's package) driven by Playwright uploads a shapes
image on the page and reads back the caption `captioner caption` gives for the same file."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.serve import free_port
from captioner.cli import main
from captioner.shapes.scenes import make_scene
from tests.helpers import CHROMIUM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt install chromium)"),
]


@pytest.fixture
def server(talking_package):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "captioner", "serve", str(talking_package), "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if json.load(answer)["status"] == "ok":
                    break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"captioner serve exited: {proc.stdout.read()}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(20)


def test_the_page_captions_an_upload_as_the_caption_command_does(server, talking_package, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    image = tmp_path / "scene.png"
    make_scene("test", 7).image.save(image)
    out = tmp_path / "cli.jsonl"
    assert main(["caption", str(talking_package), str(image), "-o", str(out), "--workers", "0"]) == 0
    expected = json.loads(out.read_text())
    assert expected["caption"], "the fixture model should say something"
    screenshot = Path(os.environ.get("CAPTIONER_SCREENSHOT", tmp_path / "serve_page.png"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server)
        page.locator("#image input[type=file]").set_input_files(str(image))
        page.locator("#image img").first.wait_for(timeout=30_000)  # the upload is shown
        page.locator("#caption-button").click()
        caption = page.locator("#caption textarea")
        expect(caption).not_to_have_value("", timeout=60_000)
        assert caption.input_value() == expected["caption"]
        expect(page.locator("#nbest")).to_contain_text(f"{expected['score']:.4f}".rstrip("0"), timeout=10_000)
        words = len(expected["caption"].split())
        expect(page.locator("#maps img")).to_have_count(words, timeout=10_000)  # one attention map per word
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 10_000
