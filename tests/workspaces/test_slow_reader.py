"""Backpressure through the whole web process: slow clients of endless streams do not make the
uvicorn process (llmconn.asgi under uvicorn, as in production) buffer the provider's output.

20 concurrent streams from an upstream that writes as fast as it is read, each read at about
2 KB/s for LLMCONN_SLOW_READER_SECONDS (default 20): the server's RSS may grow by less than
50 MB (before providers/transport.py it grew by more than 1.5 GB in such a run).
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from .conftest import _require_postgres, start_server, stop_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

STREAMS = 20
READ_BYTES, READ_EVERY_S = 512, 0.25  # 2 KB/s per stream


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server(tmp_path):
    _require_postgres()
    from tests.upstream import free_port

    port = free_port()
    process = start_server(tmp_path / "uvicorn.log", port)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_server(process)


def test_slow_readers_of_endless_streams_keep_the_web_process_small(
        server, upstream, make_connection, make_workspace, make_key):
    url, process = server
    key = make_key(make_workspace("Slow readers", chat=make_connection(upstream)))
    seconds = float(os.environ.get("LLMCONN_SLOW_READER_SECONDS", "20"))
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False},
                      headers=headers, timeout=30).status_code == 200  # warm
    before = _rss_mb(process.pid)
    upstream.set_mode("endless", delay_ms=0)
    upstream.endless_padding = 1024
    peak = [before]

    async def slow_reader(client):
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                 headers=headers) as response:
            assert response.status_code == 200
            got = 0
            deadline = time.monotonic() + seconds
            async for piece in response.aiter_raw(READ_BYTES):
                got += len(piece)
                if time.monotonic() > deadline:
                    return got
                await asyncio.sleep(READ_EVERY_S)
        return got

    async def sample():
        while True:
            peak[0] = max(peak[0], _rss_mb(process.pid))
            await asyncio.sleep(1)

    async def run():
        limits = httpx.Limits(max_connections=STREAMS + 2)
        async with httpx.AsyncClient(timeout=seconds + 30, limits=limits) as client:
            sampler = asyncio.get_running_loop().create_task(sample())
            try:
                return await asyncio.gather(*[slow_reader(client) for _ in range(STREAMS)])
            finally:
                sampler.cancel()

    got = asyncio.run(run())
    peak[0] = max(peak[0], _rss_mb(process.pid))
    assert all(g > 0 for g in got)
    assert peak[0] - before < 50, f"RSS {before:.0f} MB -> {peak[0]:.0f} MB"
    print(f"slow readers: RSS {before:.0f} MB -> peak {peak[0]:.0f} MB, upstream wrote "
          f"{upstream.bytes_streamed / 1e6:.1f} MB for {sum(got) / 1e6:.2f} MB read")
