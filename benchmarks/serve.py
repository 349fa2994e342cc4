"""`python scripts/benchmark.py serve PACKAGE`: `captioner serve` under load, dynamic batching against batch size 1.

For each mode a fresh `captioner serve PACKAGE --no-page` process (on 127.0.0.1, a free port) gets --requests
POSTs of one shapes PNG each from a bounded client (--concurrency at a time, aiohttp), with --bad of them bad
uploads mixed in evenly (not an image, a truncated PNG, a header claiming 40000 x 40000 pixels, an upload over the
size limit). Printed per mode: answers by status (every request must get one; the bad ones a 4xx, never a 5xx),
p50/p99 latency of the good ones, images/s over the run, the mean batch the server ran (its /health), the
server's resident memory at the start, the end and its peak (sampled every 0.2 s), and whether it is still up;
then images/s of dynamic batching over batch size 1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from datetime import datetime
from pathlib import Path

from captioner.outputs import write_text


def scene_pngs(n: int) -> list[bytes]:
    from captioner.shapes.scenes import make_scene

    out = []
    for i in range(n):
        buf = io.BytesIO()
        make_scene("test", i).image.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def header_only_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: what a decompression bomb looks like to a server."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    )


def bad_uploads(good: bytes, max_upload_bytes: int) -> list[tuple[str, bytes]]:
    return [
        ("notes.png", b"not an image at all"),
        ("cut.png", good[: len(good) // 3]),
        ("bomb.png", header_only_png(40_000, 40_000)),
        ("huge.png", good + bytes(max_upload_bytes - len(good) + 1)),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(package: str, batch: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "captioner",
        "serve",
        package,
        "--no-page",
        "--port",
        str(port),
        "--max-batch-size",
        str(batch),
        *extra,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"captioner serve exited: {proc.stderr.read()}") from None
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("captioner serve did not answer /health within 180 s")


async def load(url: str, uploads: list[tuple[str, bytes, bool]], concurrency: int) -> list[tuple[int, float, bool]]:
    """(status, seconds, was_good) per request; status 0 when the request got no answer. aiohttp, not httpx: on
    2 cores httpx's own CPU time capped the client at about 150 requests/s, below what the server answers."""
    import aiohttp

    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def one(name: str, data: bytes, good: bool) -> tuple[int, float, bool]:
            async with limit:
                form = aiohttp.FormData()
                form.add_field("image", data, filename=name, content_type="image/png")
                start = time.perf_counter()
                try:
                    async with session.post(f"{url}/caption", data=form) as answer:
                        await answer.read()
                        status = answer.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                return status, time.perf_counter() - start, good

        return await asyncio.gather(*(one(*u) for u in uploads))


def run_mode(package: str, batch: int, uploads: list[tuple[str, bytes, bool]], args: argparse.Namespace) -> dict:
    proc, url = start_server(package, batch, args.server_args)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_mib(proc.pid))
            done.wait(0.2)

    warm = [u for u in uploads if u[2]][: args.concurrency]
    asyncio.run(load(url, warm, args.concurrency))  # first batches allocate; memory is compared after them
    start_rss = rss_mib(proc.pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    results = asyncio.run(load(url, uploads, args.concurrency))
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
        health = json.load(answer)
    alive = proc.poll() is None
    end_rss = rss_mib(proc.pid)
    proc.terminate()
    proc.wait(30)
    good = [(s, t) for s, t, g in results if g]
    bad = [s for s, _, g in results if not g]
    latencies = sorted(t for s, t in good if s == 200)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "max_batch_size": batch,
        "requests": len(results),
        "answered": sum(s != 0 for s, _, _ in results),
        "good_ok": sum(s == 200 for s, _ in good),
        "good": len(good),
        "bad_4xx": sum(400 <= s < 500 for s in bad),
        "bad": len(bad),
        "5xx": sum(s >= 500 for s, _, _ in results),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "images_per_s": len(latencies) / wall,
        "wall_s": wall,
        "mean_batch": health["mean_batch_size"],
        "rss_start_mib": start_rss,
        "rss_end_mib": end_rss,
        "rss_peak_mib": max(samples or [end_rss]),
        "rss_quarters_mib": [samples[min(len(samples) - 1, q * len(samples) // 4)] for q in range(5) if samples],
        "alive": alive,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/benchmark.py serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", help="model package (folder or Hub repo id), e.g. runs/shapes/version_0/model")
    parser.add_argument("--requests", type=int, default=1000, help="requests per mode, bad ones included")
    parser.add_argument("--bad", type=int, default=100, help="bad uploads among them")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at once")
    parser.add_argument("--batch", type=int, default=32, help="--max-batch-size of the dynamic-batching server")
    parser.add_argument("--report", type=Path, help="also write the results here as JSON (must not exist)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=1.0,
        help="both servers' upload limit; the oversized bad uploads are 1 byte over it",
    )
    cut = argv.index("--") if "--" in argv else len(argv)  # after --: more `captioner serve` options for both
    args = parser.parse_args(argv[:cut])
    args.server_args = ["--max-upload-mb", str(args.max_upload_mb), *argv[cut + 1 :]]
    if args.report and args.report.exists():
        print(f"serve benchmark: error: --report {args.report} exists; give a new file", file=sys.stderr)
        return 2
    if not 0 <= args.bad <= args.requests:
        print("serve benchmark: error: --bad must be between 0 and --requests", file=sys.stderr)
        return 2
    pngs = scene_pngs(50)
    bad = bad_uploads(pngs[0], int(args.max_upload_mb * 2**20))
    every = args.requests // args.bad if args.bad else args.requests + 1
    uploads: list[tuple[str, bytes, bool]] = []
    for i in range(args.requests):
        if args.bad and i % every == every - 1 and sum(not u[2] for u in uploads) < args.bad:
            uploads.append((*bad[i % len(bad)], False))
        else:
            uploads.append((f"scene{i % len(pngs)}.png", pngs[i % len(pngs)], True))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {datetime.now():%Y-%m-%d %H:%M}; "
        f"{args.requests} requests ({sum(not u[2] for u in uploads)} bad) at {args.concurrency} concurrent",
        flush=True,
    )
    rows = [run_mode(args.package, batch, uploads, args) for batch in (args.batch, 1)]
    head = (
        "| max batch | answered | good 200 | bad 4xx | 5xx | p50 | p99 | images/s | mean batch | RSS start / end "
        "/ peak | RSS at 0/25/50/75/100 % of the run | still up |"
    )
    print(head + "\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        print(
            f"| {r['max_batch_size']} | {r['answered']}/{r['requests']} | {r['good_ok']}/{r['good']} | "
            f"{r['bad_4xx']}/{r['bad']} | {r['5xx']} | {r['p50_ms']:.0f} ms | {r['p99_ms']:.0f} ms | "
            f"{r['images_per_s']:.1f} | {r['mean_batch']:.1f} | {r['rss_start_mib']:.0f} / {r['rss_end_mib']:.0f} / "
            f"{r['rss_peak_mib']:.0f} MiB | {' / '.join(f'{m:.0f}' for m in r['rss_quarters_mib'])} MiB | "
            f"{'yes' if r['alive'] else 'NO'} |"
        )
    ratio = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    print(f"dynamic batching (max batch {args.batch}) / batch size 1: {ratio:.2f}x images/s")
    if args.report:
        write_text(args.report, json.dumps({"rows": rows, "ratio": ratio}, indent=2) + "\n")  # atomic
    return 0
