"""`captioner serve MODEL`: a web page and a JSON HTTP API for a model package (needs `pip install -e .[serve]`)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

from captioner.cli.common import Parser, add_device_arg, add_option, add_package_args, fail, load_package, positive
from captioner.options import MAX_IMAGE_PIXELS, Spec
from captioner.serve.limits import Limits


def serve(argv: list[str]) -> int:
    if any(a == "--static" or a.startswith("--static=") for a in argv):
        return serve_static(argv)
    parser = Parser(  # no abbreviations: `--stat DIR` must not start the model server with DIR ignored
        allow_abbrev=False,
        prog="captioner serve",
        description="Serve a model package: a web page at / (drop an image: caption, n-best, each word's "
        "cross-attention) and a JSON API (POST /caption with image files, GET /health, docs at /api/docs), with "
        "dynamic batching: requests that arrive within --max-wait-ms are captioned in one batch.",
    )
    add_package_args(parser)
    add_address_args(parser)
    parser.add_argument(
        "--static",
        metavar="DIR",
        help="instead of a model: serve the files under DIR (the OUT of `export-onnx --web`: its page is at /web/)",
    )
    add_device_arg(parser)
    parser.add_argument("--no-page", action="store_true", help="the JSON API only, no web page")
    g = parser.add_argument_group("batching and limits (defaults: captioner.serve.limits.Limits)")
    g.add_argument(
        "--max-batch-size", type=positive, default=Limits.max_batch, help="images per batch (1: no dynamic batching)"
    )
    g.add_argument(
        "--max-wait-ms", type=float, default=Limits.max_wait_ms, help="how long a request waits for others to join it"
    )
    g.add_argument(
        "--max-queue", type=positive, default=Limits.max_queue, help="waiting requests; more get 503 + Retry-After"
    )
    g.add_argument(
        "--timeout", type=float, default=Limits.timeout_s, help="seconds a request may wait for its captions (504)"
    )
    g.add_argument(
        "--max-upload-mb", type=float, default=Limits.max_upload_bytes / 2**20, help="largest request body in MiB (413)"
    )
    pixels = Spec.of("max_image_pixels", replace(MAX_IMAGE_PIXELS, default=Limits.max_pixels))  # uploads: less
    add_option(g, pixels)
    g.add_argument(
        "--max-request-pixels",
        type=positive,
        default=Limits.max_request_pixels,
        help="refuse a request whose images hold more pixels together (413), measured before decoding",
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="close a connection whose next request's headers have not arrived within this many seconds "
        "(slow or idle clients); an idle keep-alive connection is closed after 5 s",
    )
    args = parser.parse_args(argv)
    try:
        import uvicorn

        from captioner.serve.api import Service, create_api
    except ImportError as err:
        return fail(f"serve needs the serve extra ({err.name} is missing): pip install -e '.[serve]'")
    try:
        pixels.check(args.max_image_pixels)
    except ValueError as err:
        return fail(err)
    unusable = check_address(args.host, args.port)  # before the model loads, not after
    if unusable:
        return fail(unusable)
    for flag, value, high in (
        ("--timeout", args.timeout, 86_400),
        ("--header-timeout", args.header_timeout, 3_600),
        ("--max-wait-ms", args.max_wait_ms, 60_000),
        ("--max-upload-mb", args.max_upload_mb, 2**20),
    ):
        if not (math.isfinite(value) and (value > 0 or flag == "--max-wait-ms" and value == 0) and value <= high):
            return fail(f"{flag} {value}: give a positive number up to {high:,}")
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_image_pixels,
        timeout_s=args.timeout,
        max_queue=args.max_queue,
        max_batch=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_request_pixels=args.max_request_pixels,
    )
    model, tok = load_package(args.model_dir, args.device, args.revision)
    service = Service(model, tok, shown_name(args.model_dir), limits)
    app = create_api(service)
    if not args.no_page:
        try:
            import gradio as gr

            from captioner.serve.page import create_page
        except ImportError as err:
            return fail(f"the page needs gradio ({err.name} is missing): pip install -e '.[serve]', or --no-page")
        app = gr.mount_gradio_app(app, create_page(service), path="/", max_file_size=limits.max_upload_bytes)
    print(
        f"captioner: serving {service.name} on http://{args.host}:{args.port} (page: /, API: POST /caption, "
        "docs: /api/docs); Ctrl+C stops",
        file=sys.stderr,
    )
    from captioner.serve.protocol import with_header_timeout

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        http=with_header_timeout(args.header_timeout),
        timeout_keep_alive=5,
    )
    service.batcher.stop()
    return 0


def add_address_args(parser: Parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves other machines too)")
    parser.add_argument("--port", type=int, default=7860)


def check_address(host: str, port: int) -> str | None:
    """Why host:port cannot be served, as the one line to fail with, or None."""
    if not 0 < port < 65536:
        return f"--port {port}: give a port between 1 and 65535"
    taken = _cannot_bind(host, port)
    return f"--host {host} --port {port}: {taken}; choose another --port" if taken else None


def serve_static(argv: list[str]) -> int:
    """`captioner serve --static DIR`: DIR's files over HTTP (`captioner.serve.static`), until Ctrl+C."""
    parser = Parser(
        prog="captioner serve --static",
        description="Serve a folder as static files (.mjs and .wasm with the MIME types browsers need): the OUT of "
        "`captioner export-onnx PACKAGE OUT --web`, whose page at /web/ captions in the browser.",
    )
    parser.add_argument("--static", metavar="DIR", required=True, help="the folder to serve")
    add_address_args(parser)
    args = parser.parse_args(argv)
    folder = Path(args.static)
    if not folder.is_dir():
        return fail(f"--static {folder}: no such folder; give the OUT of `captioner export-onnx PACKAGE OUT --web`")
    unusable = check_address(args.host, args.port)
    if unusable:
        return fail(unusable)
    from captioner.serve.static import static_server

    page = "/web/" if (folder / "web" / "index.html").is_file() else "/"
    print(f"captioner: serving {folder} on http://{args.host}:{args.port}{page}; Ctrl+C stops", file=sys.stderr)
    with static_server(folder, args.host, args.port) as server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def _cannot_bind(host: str, port: int) -> str | None:
    """Why (host, port) cannot be served, or None (uvicorn would log the error and exit 3 after the model loaded)."""
    import socket

    try:
        with socket.create_server((host, port)):
            return None
    except OSError as err:
        return err.strerror or str(err)


def shown_name(model: str) -> str:
    """What the page, /health and the API docs call the model: a Hub repo id as given, a folder by its own name and
    its parent's (never the path from the root of this machine)."""
    from captioner.hub import is_repo_id

    if is_repo_id(model.partition("@")[0]):
        return model
    path = Path(model).resolve()
    return "/".join(p.name for p in (path.parent, path) if p.name)
