"""ASGI entry point: the production server (uvicorn, or gunicorn with uvicorn workers).

The OpenAI-compatible /v1 endpoints are async views and stream over ASGI. They take the lean
path: `GatewayFirstHandler` hands /v1/* straight to the gateway's views
(workspaces/gateway/views.py, routed by GATEWAY_ROUTES below, the only /v1 route table),
without Django's middleware (sessions, CSRF, messages, auth, audit context: a gateway call is
authenticated by its API key and writes no audit event) and without the per-request
ThreadSensitiveContext, so the views' sync work (key and resolution cache misses, usage
records) runs on asgiref's one sync thread, which keeps its database connection instead of
opening one per request. Everything else (admin, /api/, /healthz) goes through Django's full
ASGIHandler.

Because request_started/request_finished are not sent for /v1, this handler closes a broken
database connection of that thread itself: right after a call that failed for the database,
else at most once a second (usage writes close theirs at once too, workspaces/calls.py).
"""

import asyncio
import gc
import io
import logging
import os
import sys
import time

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import response_for_exception
from django.http import JsonResponse

from llmconn.outage import outage_response

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmconn.settings")
# Web processes use psycopg's connection pool on PostgreSQL (llmconn/settings.py, DB_POOL).
os.environ.setdefault("DB_POOL", "true")

logger = logging.getLogger("llmconn.asgi")

GATEWAY_PREFIX = "/v1/"
# The /v1 route table (path after /v1/ -> view of workspaces/gateway/views.py), plus
# "models/<model id>" -> models(model_id=...); any other path is the gateway's JSON 404.
# Django's URL conf has no /v1 routes: this handler is the only way in.
GATEWAY_ROUTES = {
    "chat/completions": "chat_completions",
    "embeddings": "embeddings",
    "models": "models",
}
TOO_LARGE = object()  # read_small_body: the body passed LLMCONN_MAX_REQUEST_BYTES
DB_CHECK_INTERVAL_SECONDS = 1.0


def _close_broken_connections() -> None:
    """Close the database connections of this thread that errored and no longer work."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if not conn.is_usable():
                conn.close()
            conn.errors_occurred = False


def _error(status: int, message: str, code: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "code": code, "param": None}}, status=status)


class GatewayFirstHandler(ASGIHandler):
    """Django's ASGIHandler, with /v1/* served by the gateway views directly (see above)."""

    def __init__(self):
        super().__init__()
        from llmconn import metrics  # after settings: PROMETHEUS_MULTIPROC_DIR may be in .env
        from workspaces.gateway import request, views

        self._gateway = views
        self._request = request
        self._observe = metrics.observe_gateway
        self._last_db_check = 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIX):
            await self._observe(self.handle_gateway, scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        await super().__call__(scope, receive, send)

    async def lifespan(self, receive, send) -> None:
        """The server's start and stop (ASGI lifespan): the process-wide settings of a web
        server are applied here, by the server process only, not by importing this module
        (tests and tools import it in their own processes)."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                apply_server_process_settings()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def route(self, path: str):
        """(view, kwargs) for a /v1/ path: GATEWAY_ROUTES, the one route table of /v1."""
        rest = path[len(GATEWAY_PREFIX):]
        name = GATEWAY_ROUTES.get(rest)
        if name is not None:
            return getattr(self._gateway, name), {}
        prefix, _, model_id = rest.partition("/")
        if prefix == "models" and model_id:
            return self._gateway.models, {"model_id": model_id}
        return self._gateway.not_found, {"path": rest}

    async def read_small_body(self, receive, limit: int | None = None):
        """The request body in memory (spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE, as
        Django does); None when the client went away; TOO_LARGE past `limit` bytes (reading
        stops there)."""
        parts, size, spooled, total = [], 0, None, 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if limit is not None and total > limit:
                if spooled is not None:
                    spooled.close()
                return TOO_LARGE
            if spooled is not None:
                spooled.write(chunk)
            else:
                parts.append(chunk)
                size += len(chunk)
                if size > settings.FILE_UPLOAD_MAX_MEMORY_SIZE:
                    import tempfile

                    spooled = tempfile.SpooledTemporaryFile(
                        max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
                    spooled.write(b"".join(parts))
            if not message.get("more_body", False):
                break
        if spooled is not None:
            spooled.seek(0)
            return spooled
        return io.BytesIO(b"".join(parts))

    async def handle_gateway(self, scope, receive, send):
        from llmconn import tracing

        headers = dict(scope.get("headers") or ())
        # One request id for the whole call: its log lines, usage row and answer header (reset
        # after it, so that a caller sharing this context, e.g. async_to_sync, keeps none).
        token = tracing.set_request_id(tracing.accept_request_id(
            headers.get(b"x-request-id", b"").decode("latin-1")))
        try:
            await self._handle_gateway(scope, receive, send, headers)
        finally:
            tracing.reset_request_id(token)

    async def _handle_gateway(self, scope, receive, send, headers):
        from llmconn import tracing

        limit = self._request.max_request_bytes()
        try:
            declared = int(headers.get(b"content-length") or 0)
        except ValueError:
            declared = 0
        body_file = TOO_LARGE if declared > limit else await self.read_small_body(receive,
                                                                                  limit)
        if body_file is TOO_LARGE:
            response = self._request.too_large(limit).response()
            response["x-request-id"] = tracing.current_request_id()
            await self.send_response(response, send)
            return
        if body_file is None:
            return
        try:
            request = self.request_class(scope, body_file)
            request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware would check it
        except DisallowedHost:
            response = _error(400, "Invalid Host header.", "bad_request")
        except RequestDataTooBig:
            response = _error(413, "The request body is too large.", "request_too_large")
        except UnicodeDecodeError:
            response = _error(400, "Malformed request.", "bad_request")
        else:
            response = None
        if response is not None:
            response["x-request-id"] = tracing.current_request_id()
            await self.send_response(response, send)
            body_file.close()
            return

        view, kwargs = self.route(request.path_info)

        outage = False

        async def process():
            nonlocal outage
            try:
                result = await view(request, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged; the caller gets a JSON 500
                result = outage_response(request, exc)  # logs one line, no traceback
                if result is not None:  # a 503 in the path's format
                    outage = True
                    return await self._send(result, send)
                logger.exception("Unhandled error in %s", request.path_info)
                result = response_for_exception(request, exc)
                if not isinstance(result, JsonResponse) and result.status_code >= 500:
                    result = _error(500, "Internal error.", "internal_error")
            return await self._send(result, send)

        # As Django's handler: a client that disconnects cancels the view (and a stream).
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)),
                 asyncio.create_task(process())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except Exception:  # noqa: BLE001 - RequestAborted: the client went away
                    pass
            else:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
        if not tasks[1].cancelled() and tasks[1].exception() is None:
            response = tasks[1].result()
            for closer in response._resource_closers:
                closer()
        body_file.close()
        await self.check_database(now=outage)

    async def _send(self, response, send):
        from llmconn import tracing

        if not response.has_header("x-request-id"):
            response["x-request-id"] = tracing.current_request_id()
        try:
            await self.send_response(response, send)
        except asyncio.CancelledError:
            pass  # the client went away while we were sending
        return response

    async def check_database(self, *, now: bool = False) -> None:
        """Close broken connections of the sync thread: at once after a database error (the
        next call opens a fresh one instead of failing on the closed one), else at most once
        a second."""
        at = time.monotonic()
        if now or at - self._last_db_check >= DB_CHECK_INTERVAL_SECONDS:
            self._last_db_check = at
            await sync_to_async(_close_broken_connections)()


def apply_server_process_settings() -> None:
    """What a web server process sets for itself at startup: the GIL switch interval and the
    garbage collector (settings.LLMCONN_GIL_SWITCH_INTERVAL and LLMCONN_GC_THRESHOLD, why
    there): what is loaded by now is collected once and frozen out of later passes."""
    if settings.LLMCONN_GIL_SWITCH_INTERVAL > 0:
        sys.setswitchinterval(settings.LLMCONN_GIL_SWITCH_INTERVAL)
    if settings.LLMCONN_GC_THRESHOLD:
        gc.set_threshold(*settings.LLMCONN_GC_THRESHOLD)
    gc.collect()
    gc.freeze()


django.setup(set_prefix=False)
application = GatewayFirstHandler()
