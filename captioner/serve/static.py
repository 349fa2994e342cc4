"""`captioner serve --static DIR`: a folder as static files over HTTP, for the browser page of `export-onnx --web`.

The standard library's server (no extra needed), with the MIME types a browser insists on set whatever the
machine's mimetypes tables say: JavaScript modules (.mjs) load only as JavaScript, and WebAssembly streams only as
application/wasm. Any other static server that sends those types serves the page as well.
"""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}


class StaticHandler(SimpleHTTPRequestHandler):
    """Files under the folder, with `TYPES`, not cached (a re-export is seen at once), requests not logged; only
    files that really lie under the folder: no folder listing, no hidden file or folder, no link leading out of it
    (each is a 404, as a file that is not there)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def translate_path(self, path: str) -> str:
        found = Path(super().translate_path(path))  # `..` parts are dropped by the base class
        root = Path(self.directory).resolve()
        inside = found.resolve()
        hidden = any(part.startswith(".") for part in found.relative_to(self.directory).parts)
        if hidden or not inside.is_relative_to(root):
            return str(root / ".captioner-not-served")  # a name that is never served: the base class answers 404
        return str(found)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "No folder listings")
        return None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        pass


def static_server(folder: str | Path, host: str, port: int) -> ThreadingHTTPServer:
    """A server (not yet serving: call `serve_forever`) of the files under `folder` on host:port."""
    handler = functools.partial(StaticHandler, directory=str(folder))
    return ThreadingHTTPServer((host, port), handler)
