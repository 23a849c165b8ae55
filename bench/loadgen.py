"""A small HTTP/1.1 load generator (asyncio + uvloop + httptools), run in its own process.

Each of `--concurrency` keep-alive connections sends the same request back to back; latency is
measured per request from the first byte written to the last byte read. For streamed answers
(`--stream`) the time to the first body chunk is measured too. Prints one JSON object:

    {"requests", "errors", "statuses", "seconds", "rps", "p50_ms", "p90_ms", "p99_ms",
     "mean_ms", "ttfc_p50_ms", "ttfc_p99_ms"}

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/chat/completions \
        --body '{"model": "chat", "messages": [...]}' --header 'Authorization: Bearer lck_...' \
        --concurrency 32 --duration 10 [--warmup 200] [--stream]

It costs a few tens of microseconds of CPU per request, so it is not the bottleneck of what it
measures (httpx or aiohttp would cost several times more on the same 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from urllib.parse import urlsplit

import httptools


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


class Conn(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its whole answer, repeat."""

    def __init__(self):
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future | None = None
        self.first_body: float | None = None
        self.status = 0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        import socket

        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.done and not self.done.done():
                self.done.set_exception(exc)

    def connection_lost(self, exc):
        if self.done and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()

    def on_body(self, body):
        if self.first_body is None:
            self.first_body = time.perf_counter()

    def on_message_complete(self):
        if self.done and not self.done.done():
            self.done.set_result(self.status)

    async def request(self, raw: bytes) -> tuple[int, float, float | None]:
        self.done = asyncio.get_running_loop().create_future()
        self.first_body = None
        started = time.perf_counter()
        self.transport.write(raw)
        status = await self.done
        ended = time.perf_counter()
        ttfc = (self.first_body - started) if self.first_body else None
        return status, ended - started, ttfc


async def run(args) -> dict:
    parts = urlsplit(args.url)
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = args.body.encode() if args.body else b""
    if args.body and args.body.startswith("@"):
        with open(args.body[1:], "rb") as fh:
            body = fh.read()
    lines = [f"{args.method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: llmconn-bench"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += args.header or []
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    raws = [raw]
    if args.keys_file:  # one request per key in turn (round-robin over many API keys)
        with open(args.keys_file) as fh:
            keys = [k.strip() for k in fh if k.strip()]
        raws = [("\r\n".join([*lines, f"Authorization: Bearer {k}"]) + "\r\n\r\n").encode()
                + body for k in keys]
    turn = [0]

    def next_raw() -> bytes:
        turn[0] += 1
        return raws[turn[0] % len(raws)]

    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(args.concurrency):
        _, conn = await loop.create_connection(Conn, host, port)
        conns.append(conn)

    # warm-up: every connection, then the requested number spread over them
    warm = max(args.warmup, args.concurrency) if args.warmup >= 0 else 0
    counter = [warm]

    async def warmup(conn):
        while counter[0] > 0:
            counter[0] -= 1
            await conn.request(next_raw())

    await asyncio.gather(*(warmup(c) for c in conns))

    latencies: list[float] = []
    ttfcs: list[float] = []
    statuses: dict[int, int] = {}
    errors = [0]
    remaining = [args.requests or 0]
    deadline = time.perf_counter() + args.duration if not args.requests else None

    async def worker(conn):
        while True:
            if deadline is not None:
                if time.perf_counter() >= deadline:
                    return
            else:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            try:
                status, latency, ttfc = await conn.request(next_raw())
            except Exception:  # noqa: BLE001 - counted, and this connection stops
                errors[0] += 1
                return
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors[0] += 1
            latencies.append(latency)
            if ttfc is not None:
                ttfcs.append(ttfc)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    seconds = time.perf_counter() - started
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()

    def ms(value):
        return None if value is None else round(value * 1000, 3)

    result = {
        "requests": len(latencies), "errors": errors[0], "statuses": statuses,
        "seconds": round(seconds, 3), "rps": round(len(latencies) / seconds, 1) if seconds else 0,
        "p50_ms": ms(percentile(latencies, 50)), "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "mean_ms": ms(statistics.fmean(latencies)) if latencies else None,
    }
    if args.stream:
        result["ttfc_p50_ms"] = ms(percentile(ttfcs, 50))
        result["ttfc_p99_ms"] = ms(percentile(ttfcs, 99))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", default="", help="JSON text, or @file")
    parser.add_argument("--header", action="append", help="'Name: value' (repeat)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=0, help="a fixed count instead of --duration")
    parser.add_argument("--warmup", type=int, default=50, help="-1: none at all")
    parser.add_argument("--keys-file", default="",
                        help="API keys, one a line: each request sends the next one "
                             "(Authorization header), round-robin")
    parser.add_argument("--stream", action="store_true", help="also report time to first chunk")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
