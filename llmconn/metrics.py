"""Prometheus metrics: every metric llmconn exports is defined here, and `GET /metrics` serves them.

prometheus-client's multiprocess mode is used when `PROMETHEUS_MULTIPROC_DIR` is set (gunicorn's
workers and the Celery worker each write their samples to files there; a scrape of any web worker
sums them, and those of LLMCONN_METRICS_EXTRA_DIRS: the Celery worker's directory). Without it
(`make run`, one process) the samples live in this process's registry.
https://prometheus.github.io/client_python/multiprocess/

Label values are bounded: they come from our own rows (workspace slug, connection name, provider,
the model chosen by resolution) or from fixed sets (endpoint, status class, error class), never
from the request; and each label keeps at most LLMCONN_METRICS_MAX_LABEL_VALUES distinct values
per process, later ones are counted as "other".

Flows are instrumented in one place each: `observe_gateway` wraps a /v1 request (llmconn.asgi),
`observe_attempt` counts one provider call (workspaces.calls.record), `observe_connection_test`
one finished test or discovery (connections.diagnostics), Celery signals count tasks. Connection
health is read from the database at scrape time (the last test's result is stored on the row)
by a collector the connections app registers (`register_collector`), so it holds across
restarts and processes.
"""

from __future__ import annotations

import contextvars
import functools
import glob
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or ""
if _MULTIPROC_DIR:
    # prometheus_client opens its sample files there as soon as a metric gets a value.
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

from prometheus_client import (  # noqa: E402 - after the directory exists
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

OTHER = "other"
NONE = "none"
MAX_LABEL_LENGTH = 100

# Latency buckets (seconds): fine at the low end for the time llmconn adds, wide for providers.
ADDED_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                120.0, 300.0)

_CALL = ("workspace", "connection", "provider", "model")

GATEWAY_REQUESTS = Counter(
    "llmconn_gateway_requests", "/v1 requests answered, by what they resolved to and outcome.",
    ("endpoint", *_CALL, "status_class", "error_class"))
GATEWAY_DURATION = Histogram(
    "llmconn_gateway_request_duration_seconds",
    "/v1 request time from arrival to the last byte sent (a whole stream included).",
    ("endpoint", "stream"), buckets=CALL_BUCKETS)
GATEWAY_FIRST_BYTE = Histogram(
    "llmconn_gateway_time_to_first_byte_seconds",
    "/v1 request time from arrival to the first byte of the answer's body.",
    ("endpoint", "stream"), buckets=CALL_BUCKETS)
GATEWAY_ADDED = Histogram(
    "llmconn_gateway_added_latency_seconds",
    "Time llmconn adds to a /v1 call: time to first byte minus the time spent waiting for "
    "providers (for a stream, until their first chunk).",
    ("endpoint", "stream"), buckets=ADDED_BUCKETS)
PROVIDER_CALLS = Counter(
    "llmconn_provider_calls", "Calls made to providers (each fallback attempt counts).",
    (*_CALL, "status_class", "error_class"))
TOKENS = Counter("llmconn_tokens", "Tokens used by gateway calls.", (*_CALL, "direction"))
COST = Counter("llmconn_cost_usd", "Cost of gateway calls (litellm's prices, or the "
               "connection's price override).", _CALL)
CONNECTION_TESTS = Counter(
    "llmconn_connection_tests", "Finished connection tests and model discoveries.",
    ("kind", "connection", "provider", "outcome", "error_class"))
CELERY_TASKS = Counter("llmconn_celery_tasks", "Celery task outcomes.", ("task", "outcome"))
CELERY_TASK_DURATION = Histogram("llmconn_celery_task_duration_seconds",
                                 "Celery task run time.", ("task",), buckets=CALL_BUCKETS)


# --- bounded label values ------------------------------------------------------------------

logger = logging.getLogger(__name__)


def _never_fails(fn):
    """Metrics must not fail what they count (a full disk under PROMETHEUS_MULTIPROC_DIR...):
    an error is logged, the call goes on."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            logger.warning("Metrics not recorded (%s): %s", fn.__name__, type(exc).__name__)
    return wrapper


_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def _max_label_values() -> int:
    from django.conf import settings

    return getattr(settings, "LLMCONN_METRICS_MAX_LABEL_VALUES", 500)


def bounded(label: str, value: object) -> str:
    """`value` as a label value: "none" when empty; "other" once `label` has had
    LLMCONN_METRICS_MAX_LABEL_VALUES distinct values in this process (cardinality cap)."""
    if value is None or value == "":
        return NONE
    text = str(value)[:MAX_LABEL_LENGTH]
    seen = _seen.get(label)
    if seen is not None and text in seen:
        return text
    with _seen_lock:
        seen = _seen.setdefault(label, set())
        if text in seen:
            return text
        if len(seen) >= _max_label_values():
            return OTHER
        seen.add(text)
    return text


_children: dict[tuple, object] = {}


def _child(metric, *values: str):
    """`metric.labels(*values)`, kept: prometheus-client validates and locks on every
    `labels()` call; the children are as many as the bounded label combinations."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


# Our own refusals (no provider answered), by status: a fixed set of error classes.
_REFUSALS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 413: "too_large", 429: "throttled"}


# --- /v1 requests ----------------------------------------------------------------------------

class _Request:
    """What is learnt about one /v1 request while it runs (filled by `observe_attempt`)."""

    __slots__ = ("endpoint", "started", "status", "first_byte", "budget", "stream", "labels",
                 "error_class", "provider_seconds")

    def __init__(self, endpoint: str):
        self.endpoint, self.started = endpoint, time.perf_counter()
        self.status, self.first_byte, self.budget, self.stream = 0, None, False, False
        self.labels: tuple[str, str, str, str] = (NONE, NONE, NONE, NONE)
        self.error_class, self.provider_seconds = "", 0.0


_request: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "llmconn_metrics_request", default=None)

_ENDPOINTS = {"chat/completions": "chat", "embeddings": "embeddings", "models": "models"}


_enabled: bool | None = None


def enabled() -> bool:
    """LLMCONN_METRICS_ENABLED (read once): off, /v1 calls are not instrumented (the A/B switch
    of bench/metrics.py)."""
    global _enabled
    if _enabled is None:
        from django.conf import settings

        _enabled = bool(getattr(settings, "LLMCONN_METRICS_ENABLED", True))
    return _enabled


def _endpoint(path: str) -> str:
    rest = path[len("/v1/"):]
    if rest.startswith("models/"):
        return "models"
    return _ENDPOINTS.get(rest, OTHER)


async def observe_gateway(handle, scope, receive, send) -> None:
    """Run `handle(scope, receive, send)` (an ASGI /v1 request) and count it: status from the
    response, labels from the provider attempts made meanwhile, latencies from the first and
    last bytes sent."""
    if not enabled():
        await handle(scope, receive, send)
        return
    req = _Request(_endpoint(scope["path"]))

    async def timed_send(message):
        kind = message["type"]
        if kind == "http.response.start":
            req.status = message["status"]
            if req.status == 429:
                req.budget = any(k == b"x-llmconn-budget" for k, _ in message.get("headers", ()))
        elif kind == "http.response.body" and req.first_byte is None and (
                message.get("body") or not message.get("more_body")):
            req.first_byte = time.perf_counter()
        await send(message)

    token = _request.set(req)
    try:
        await handle(scope, receive, timed_send)
    finally:
        _request.reset(token)
        _finish(req)


@_never_fails
def _finish(req: _Request) -> None:
    end = time.perf_counter()
    # The last attempt's error class (a stream may fail after its 200), else ours.
    error_class = req.error_class
    if req.status >= 400 and not error_class:
        error_class = ("budget_exceeded" if req.budget else
                       _REFUSALS.get(req.status, "internal" if req.status >= 500 else OTHER))
    stream = "true" if req.stream else "false"
    _child(GATEWAY_REQUESTS, req.endpoint, *req.labels, status_class(req.status),
                            error_class or NONE).inc()
    _child(GATEWAY_DURATION, req.endpoint, stream).observe(end - req.started)
    first = (req.first_byte or end) - req.started
    _child(GATEWAY_FIRST_BYTE, req.endpoint, stream).observe(first)
    _child(GATEWAY_ADDED, req.endpoint, stream).observe(max(0.0, first - req.provider_seconds))


@_never_fails
def observe_attempt(resolved, *, started: float, answered: float | None, status: int,
                    error_class: str = "", stream: bool = False, input_tokens: int = 0,
                    output_tokens: int = 0, cost=None) -> None:
    """Count one provider call of a workspace (`resolved`: workspaces.resolution.Resolved;
    `started`/`answered`: perf_counter times of the call and of the provider's answer, None
    when it failed, i.e. now). Also tells the /v1 request running it, if any, what it
    resolved to."""
    if not enabled():
        return
    labels = (bounded("workspace", resolved.workspace_slug),
              bounded("connection", resolved.connection_name),
              bounded("provider", resolved.provider), bounded("model", resolved.model))
    _child(PROVIDER_CALLS, *labels, status_class(status), error_class or NONE).inc()
    if input_tokens:
        _child(TOKENS, *labels, "input").inc(input_tokens)
    if output_tokens:
        _child(TOKENS, *labels, "output").inc(output_tokens)
    if cost:
        _child(COST, *labels).inc(float(cost))
    req = _request.get()
    if req is not None:
        req.labels, req.error_class, req.stream = labels, error_class, stream
        # Each attempt's wait until the provider answered or failed (for a stream, recorded
        # at its end, until its first chunk: `answered`).
        req.provider_seconds += (answered or time.perf_counter()) - started


# --- connection tests and Celery tasks ---------------------------------------------------------

@_never_fails
def observe_connection_test(*, kind: str, connection_name: str | None, provider: str, ok: bool,
                            error_class: str = "") -> None:
    """Count one finished connection test or model discovery."""
    CONNECTION_TESTS.labels(bounded("kind", kind), bounded("connection", connection_name),
                            bounded("provider", provider), "ok" if ok else "failed",
                            bounded("error_class", "" if ok else error_class)).inc()


_task_started: dict[str, float] = {}


def _task_name(sender) -> str:
    return bounded("task", getattr(sender, "name", None) or OTHER)


def connect_celery_signals() -> None:
    """Count Celery task outcomes (success, failure, retry, revoked) and run times, in the
    process that runs the task (the worker, or the caller when eager)."""
    from celery import signals

    def prerun(task_id=None, task=None, **_):
        _task_started[task_id] = time.perf_counter()

    def postrun(task_id=None, task=None, **_):
        started = _task_started.pop(task_id, None)
        if started is not None:
            CELERY_TASK_DURATION.labels(_task_name(task)).observe(time.perf_counter() - started)

    def outcome(name):
        def count(sender=None, **_):
            CELERY_TASKS.labels(_task_name(sender), name).inc()
        return count

    def revoked(sender=None, request=None, **_):
        CELERY_TASKS.labels(bounded("task", getattr(request, "task", None) or OTHER),
                            "revoked").inc()

    handlers = [(signals.task_prerun, prerun), (signals.task_postrun, postrun),
                (signals.task_success, outcome("success")),
                (signals.task_failure, outcome("failure")),
                (signals.task_retry, outcome("retry")), (signals.task_revoked, revoked)]
    for signal, handler in handlers:
        signal.connect(handler, weak=False, dispatch_uid=f"llmconn.metrics.{handler.__name__}"
                       f".{id(signal)}")


# --- scraping --------------------------------------------------------------------------------

_collectors: list[Callable[[], Iterable]] = []


def register_collector(collect: Callable[[], Iterable]) -> None:
    """Add metric families computed at scrape time (e.g. from the database) to /metrics."""
    if collect not in _collectors:
        _collectors.append(collect)


class _Scrape:
    """One scrape: the samples of every process (multiprocess mode) or of this one, and the
    registered scrape-time collectors."""

    def collect(self):
        if _MULTIPROC_DIR:
            from django.conf import settings

            files = []
            for directory in [_MULTIPROC_DIR, *getattr(settings, "LLMCONN_METRICS_EXTRA_DIRS",
                                                       ())]:
                files += glob.glob(os.path.join(directory, "*.db"))
            yield from MultiProcessCollector.merge(files, accumulate=True)
        else:
            yield from REGISTRY.collect()
        for collect in _collectors:
            yield from collect()


def render() -> tuple[bytes, str]:
    """(body, content type) of a scrape in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def address_allowed(address: str | None) -> bool:
    """Whether `address` (the peer's IP) is in LLMCONN_METRICS_ALLOW (IPs or CIDRs)."""
    from django.conf import settings

    allow = getattr(settings, "LLMCONN_METRICS_ALLOW", None) or []
    if not address or not allow:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for item in allow:
        try:
            if ip in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return False


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit hook: forget the live gauges of a dead worker (none today; kept so
    a future live gauge is right)."""
    if _MULTIPROC_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, _MULTIPROC_DIR)


def connection_health(rows: Iterable[tuple[str, str, str, str, object]]):
    """Families for the connections' health (their last test's result, as stored on each
    row): rows of (name, provider, status, error class, last tested at (datetime|None))."""
    from prometheus_client.core import GaugeMetricFamily

    healthy = GaugeMetricFamily(
        "llmconn_connection_healthy",
        "1 when an active connection's last test succeeded, 0 when it failed (untested ones "
        "are not listed).", labels=("connection", "provider", "error_class"))
    tested = GaugeMetricFamily(
        "llmconn_connection_last_test_timestamp_seconds",
        "When an active connection was last tested (Unix time).",
        labels=("connection", "provider"))
    for name, provider, status, error_class, when in rows:
        if status not in ("ok", "failed"):
            continue
        # Every active connection is listed (no cap: the rows bound it, and a capped name
        # would hide which connection is down).
        healthy.add_metric((name, provider, error_class or NONE), 1 if status == "ok" else 0)
        if when is not None:
            tested.add_metric((name, provider), when.timestamp())
    return [healthy, tested]


SPOOL_STORES = ("redis", "file")


def usage_spool_depth(depth: dict):
    """Families for the usage spool (workspaces/usage_spool.py; /readyz shows the same depth):
    rows waiting per store, and whether each store's depth could be read (Redis down or not
    configured: 0, and its row count is left out rather than reported as 0)."""
    from prometheus_client.core import GaugeMetricFamily

    rows = GaugeMetricFamily(
        "llmconn_usage_spool_rows",
        "Usage rows kept in the spool (the database did not take them yet), by store.",
        labels=("store",))
    readable = GaugeMetricFamily(
        "llmconn_usage_spool_readable",
        "1 when the spool store's depth could be read at this scrape, else 0.",
        labels=("store",))
    for store in SPOOL_STORES:
        count = depth.get(store)
        readable.add_metric((store,), 0 if count is None else 1)
        if count is not None:
            rows.add_metric((store,), count)
    return [rows, readable]

