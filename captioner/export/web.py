"""`captioner export-onnx PACKAGE OUT --web`: OUT/web/, a static page that captions in the browser with no server.

The page (`captioner/export/page/`: index.html and caption.mjs) loads ../onnx/*.onnx, ../config.json,
../special_tokens.json, ../tokenizer.json and ../preprocessor_config.json with onnxruntime-web's wasm backend,
preprocesses a dropped image as `captioner.preprocess` does, per preprocessor_config.json (canvas resize, float32
normalisation), decodes greedily and turns ids into text as `CaptionTokenizer.decode` does. Beside it: the three
files of onnxruntime-web's wasm backend (module, its loader, the wasm), copied from the npm package: never a CDN,
so that the page works offline and sends nothing anywhere. The graphs stay in ../onnx/, not copied.

Where those files come from: a `dist` folder given by the caller (node_modules/onnxruntime-web/dist), or
`npm install onnxruntime-web@ORT_WEB_VERSION` run once into a cache folder. The version is pinned: it is the one
the browser test runs the graphs with, and the npm registry is the package's own distribution.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

WEB_FOLDER = "web"
ORT_WEB_VERSION = "1.31.1"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")  # the wasm backend
PAGE_FILES = ("index.html", "caption.mjs")


class RuntimeFilesMissing(RuntimeError):
    """onnxruntime-web's files cannot be had: a given folder lacks them, or npm is missing or failed."""


def cache_folder() -> Path:
    """Where `npm install` puts onnxruntime-web: $XDG_CACHE_HOME (or ~/.cache)/captioner/onnxruntime-web-VERSION."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "captioner" / f"onnxruntime-web-{ORT_WEB_VERSION}"


def read_json(path: Path) -> dict:
    """The JSON object in `path`; ValueError naming the file when it is not one."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a JSON file ({err})") from err
    if not isinstance(found, dict):
        raise ValueError(f"{path}: not a JSON object")
    return found


def check_dist(dist: Path) -> Path:
    """`dist` if it holds every file of `ORT_FILES`, else RuntimeFilesMissing naming the first one missing."""
    for name in ORT_FILES:
        if not (dist / name).is_file():
            raise RuntimeFilesMissing(f"{dist} has no {name}: give onnxruntime-web's dist folder")
    package = dist.parent / "package.json"
    version = read_json(package).get("version") if package.is_file() else None
    if version not in (None, ORT_WEB_VERSION):
        log.warning("onnxruntime-web %s in %s; the page is tested with %s", version, dist, ORT_WEB_VERSION)
    return dist


def npm_install() -> Path:
    """onnxruntime-web@ORT_WEB_VERSION's dist folder in `cache_folder()`, installed by npm the first time (into a
    temporary folder renamed into place, so that an interrupted or concurrent install leaves no half of one)."""
    cache = cache_folder()
    dist = cache / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / name).is_file() for name in ORT_FILES):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeFilesMissing("npm (Node.js) is not installed")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        command = [npm, "install", f"onnxruntime-web@{ORT_WEB_VERSION}", "--prefix", str(tmp)]
        command += ["--no-save", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            raise RuntimeFilesMissing(f"npm install onnxruntime-web@{ORT_WEB_VERSION} failed: {last}")
        tmp.chmod(0o755)  # mkdtemp makes 0700
        if cache.exists() and not all((dist / name).is_file() for name in ORT_FILES):
            shutil.rmtree(cache, ignore_errors=True)  # an incomplete one (a complete one is another install's)
        try:
            tmp.rename(cache)
        except OSError:  # another process renamed its install into place first: use it if it is whole
            if not all((dist / name).is_file() for name in ORT_FILES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return check_dist(dist)


def onnxruntime_web(dist: str | Path | None = None) -> Path:
    """The folder to copy onnxruntime-web's wasm backend from: `dist` checked, or the npm-installed cache."""
    return check_dist(Path(dist)) if dist is not None else npm_install()


def check_tokenizer(path: Path) -> None:
    """ValueError unless the tokenizer.json at `path` is byte-level (the page's decoder, as GPT-2's and ours)."""
    decoder = (read_json(path).get("decoder") or {}).get("type")
    if decoder != "ByteLevel":
        raise ValueError(f"{path}: the page decodes byte-level BPE tokenizers only; this one's decoder is {decoder}")


def write_page(out: Path, dist: Path) -> Path:
    """OUT/web/: the page's files and onnxruntime-web's from `dist` (see `onnxruntime_web`)."""
    web = out / WEB_FOLDER
    web.mkdir()
    page = resources.files("captioner.export") / "page"
    for name in PAGE_FILES:
        (web / name).write_bytes((page / name).read_bytes())
    for name in ORT_FILES:
        shutil.copyfile(dist / name, web / name)
    return web
