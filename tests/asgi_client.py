"""An in-process client of `llmconn.asgi.application`, the production entry point, for the /v1
gateway tests: the same route table, body reading and error handling as the server runs
(Django's test client would go through the URL conf and middleware instead, which /v1 skips).

Responses stream: `streaming_content` yields the body parts as the app sends them, so a test
can act between two SSE events. The app runs on the calling thread's event loop; its sync work
runs on this thread (thread-sensitive), so it sees the test's database transaction.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os

from django.utils.datastructures import CaseInsensitiveMapping


def production_app():
    """llmconn.asgi.application, imported without changing this process's DB_POOL setting
    (the module turns the pool on for web processes; the test process keeps its own, and the
    subprocesses it starts inherit its environment)."""
    had_pool = os.environ.get("DB_POOL")
    from llmconn.asgi import application

    if had_pool is None:
        os.environ.pop("DB_POOL", None)
    return application


class AsgiResponse:
    """What a test reads of an answer: status, headers (case-insensitive), body."""

    def __init__(self, start: dict, messages: asyncio.Queue, task: asyncio.Task,
                 done: asyncio.Event):
        self.status_code = start["status"]
        self.headers = CaseInsensitiveMapping(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", ())})
        self._messages, self._task, self._done = messages, task, done
        self._content: bytes | None = None

    def items(self):
        """The headers as (name, value) pairs, as Django's HttpResponse.items()."""
        return self.headers.items()

    @property
    def streaming(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")

    @property
    def streaming_content(self):
        return self._parts()

    async def _parts(self):
        while True:
            message = await self._messages.get()
            if message is None:
                break
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                break
        self._done.set()  # the client has it all: the app's receive() now says disconnect
        await self._task

    async def aread(self) -> bytes:
        if self._content is None:
            self._content = b"".join([part async for part in self._parts()])
        return self._content

    @property
    def content(self) -> bytes:
        assert self._content is not None, "read the body first (aread / streaming_content)"
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self):
        return jsonlib.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.headers

    def has_header(self, name: str) -> bool:
        return name in self.headers

    def get(self, name: str, default=None):
        return self.headers.get(name, default)


class AsgiClient:
    """`await client.post(path, data=..., content_type=..., headers=...)` → AsgiResponse whose
    body is not read yet (read it with `aread()` or `streaming_content`)."""

    def __init__(self, app=None):
        self.app = app or production_app()

    async def request(self, method: str, path: str, *, data: bytes | str = b"",
                      content_type: str | None = None, headers: dict | None = None
                      ) -> AsgiResponse:
        body = data.encode() if isinstance(data, str) else (data or b"")
        raw = [(b"host", b"testserver")]
        if content_type:
            raw.append((b"content-type", content_type.encode("latin-1")))
        if body:
            raw.append((b"content-length", str(len(body)).encode()))
        raw += [(k.lower().encode("latin-1"), str(v).encode("latin-1"))
                for k, v in (headers or {}).items()]
        path, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
                 "headers": raw, "client": ("127.0.0.1", 5), "server": ("testserver", 80)}
        messages: asyncio.Queue = asyncio.Queue()
        done = asyncio.Event()
        sent_body = False

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def run():
            try:
                await self.app(scope, receive, messages.put)
            finally:
                await messages.put(None)

        task = asyncio.create_task(run())
        start = await messages.get()
        if start is None:
            await task
            raise AssertionError(f"{method} {path}: the app sent no response")
        return AsgiResponse(start, messages, task, done)

    async def post(self, path, data=b"", content_type="application/json", headers=None):
        return await self.request("POST", path, data=data, content_type=content_type,
                                  headers=headers)

    async def get(self, path, headers=None):
        return await self.request("GET", path, headers=headers)
