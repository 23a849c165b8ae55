"""Connection tests and model discovery: the services behind the asynchronous checks.

Flow: a `*_request` service validates, stores a pending `ConnectionTest` (an unsaved
configuration's secrets encrypted on the row) and enqueues a task with the row's id on commit;
the task calls the matching `*_run` service, which does nothing unless the row is still pending
(safe to run twice), marks it running, makes the call outside any transaction, and stores the
result with our own message. The test row's secrets are emptied when it finishes.

A test of a saved connection records the revision it checked; its result becomes the
connection's `status` / `last_tested_at` / `last_error_class` only if the connection has not
changed since. Tests of unsaved settings never touch the connection.

A worker killed mid-test cannot leave a row `running` forever: `connection_tests_reap` (run
periodically by beat, and for one row whenever it is read) fails rows running longer than the
task's hard time limit plus a margin, and rows nobody picked up within PENDING_LIMIT_S.

The health sweep tests many connections inside ONE task with asyncio and bounded concurrency
(providers.checks.atest_many) and writes the results when they are all in, so nothing is left
running if the sweep dies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.services import audit_record, secret_fingerprints
from llmconn import metrics
from llmconn.errors import NotFound, ServiceUnavailable, ValidationFailed
from llmconn.versions import bump_connections
from providers import checks
from providers.base import EMBEDDINGS, find_provider, host_of
from providers.errors import ProviderError, classify
from providers.validation import config_with_defaults, validate_connection_settings

from .models import (
    Connection,
    ConnectionStatus,
    ConnectionTest,
    DiscoveredModel,
    ErrorClass,
    JobKind,
    TestStatus,
)
from .services import check_credentials_input, resolve_auth_method

logger = logging.getLogger(__name__)

# Time limits. The provider call has TEST_TIMEOUT_S; the task's soft limit interrupts anything
# stuck beyond it, the hard limit kills the worker process; the reaper fails a row still
# running after the hard limit plus a margin. https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits
TEST_TIMEOUT_S = 20
TASK_SOFT_LIMIT_S = 45
TASK_HARD_LIMIT_S = 60
RUNNING_LIMIT_S = TASK_HARD_LIMIT_S + 30
PENDING_LIMIT_S = 15 * 60
SWEEP_SOFT_LIMIT_S = 270
SWEEP_HARD_LIMIT_S = 300
SWEEP_DEADLINE_S = 240  # the sweep stops waiting and records the rest as timed out
SWEEP_CONCURRENCY = 20
SWEEP_LOCK_KEY = "llmconn:connection-health-sweep"
RETENTION = timedelta(days=30)

REAPED_RUNNING_MESSAGE = ("The test did not finish within its time limit: the worker running "
                          "it may have stopped. Try again.")
REAPED_PENDING_MESSAGE = ("No worker picked this test up within {minutes} minutes: check that "
                          "the Celery worker is running, then try again.")


# --- reads -------------------------------------------------------------------------------------

def connection_test_get(*, test_id) -> ConnectionTest:
    """One test or discovery job by id; a stale one is failed (reaped) before it is returned."""
    try:
        test = ConnectionTest.objects.select_related("connection").get(pk=test_id)
    except (ConnectionTest.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such connection test.") from None
    if test.status in (TestStatus.PENDING, TestStatus.RUNNING) and _is_stale(test, timezone.now()):
        connection_tests_reap(test_ids=[test.pk])
        test.refresh_from_db()
    return test


def connection_test_list(*, connection_id=None) -> QuerySet[ConnectionTest]:
    """Tests and discovery jobs, newest first, optionally of one connection."""
    qs = ConnectionTest.objects.all().defer("secrets", "config")
    if connection_id:
        qs = qs.filter(connection_id=connection_id)
    return qs.order_by("-created_at")


def connection_models(*, connection: Connection) -> QuerySet[DiscoveredModel]:
    """The models a connection's last successful discovery found."""
    return connection.discovered_models.all().order_by("model_id")


# --- requests (web side) -----------------------------------------------------------------------

def _extra_time(timeout_seconds: int | None) -> int:
    """Seconds a job with this timeout may run beyond the default limits."""
    return max(0, (timeout_seconds or TEST_TIMEOUT_S) - TEST_TIMEOUT_S)


def _enqueue(task_name: str, test: ConnectionTest) -> None:
    from . import tasks

    task = getattr(tasks, task_name)
    test_id = str(test.pk)
    extra = _extra_time(test.timeout_seconds)
    # A connection with a long timeout_seconds gets task limits that long too.
    options = ({"soft_time_limit": TASK_SOFT_LIMIT_S + extra,
                "time_limit": TASK_HARD_LIMIT_S + extra} if extra else {})

    def send() -> None:
        try:
            task.apply_async(args=[test_id], **options)
        except Exception as exc:  # broker (Redis) down: kombu OperationalError and friends
            _not_queued(test_id, exc)

    transaction.on_commit(send)


QUEUE_DOWN_MESSAGE = ("Not started: the task queue (Redis broker) is unavailable. Check that "
                      "Redis is running, then try again.")


def _not_queued(test_id: str, exc: Exception) -> None:
    """A job the broker refused: fail its row now (never left pending) and answer 503."""
    logger.error("Could not queue connection test %s: task queue unavailable (%s)", test_id,
                 type(exc).__name__)
    ConnectionTest.objects.filter(pk=test_id, status=TestStatus.PENDING).update(
        status=TestStatus.FAILED, message=QUEUE_DOWN_MESSAGE, finished_at=timezone.now(),
        secrets=None, secrets_key_id="")
    raise ServiceUnavailable(QUEUE_DOWN_MESSAGE, code="task_queue_unavailable") from None


# Hooks that say which models a connection serves to the `embedding` role (registered by the
# workspaces app, which owns bindings: connections never imports it). Each takes a Connection
# and returns a set of model names.
EMBEDDING_USES: list = []
ENDPOINTS = ("chat", "embeddings")


def _check_endpoint(endpoint: str) -> str:
    endpoint = (endpoint or "").strip()
    if endpoint and endpoint not in ENDPOINTS:
        raise ValidationFailed("endpoint must be chat or embeddings.",
                               fields={"endpoint": ["Use chat or embeddings."]})
    return endpoint


def test_endpoint(*, connection: Connection | None, provider: str, model: str,
                  endpoint: str = "") -> str:
    """The API a connection test calls: the one asked for; else embeddings when the provider
    makes embeddings and the model is an embedding model, or is the model the connection
    serves to a workspace's `embedding` role; else chat."""
    if endpoint in ENDPOINTS:
        return endpoint
    spec = find_provider(provider)
    if spec is None or EMBEDDINGS not in spec.capabilities:
        return "chat"
    if checks.is_embedding_model(model or ""):
        return "embeddings"
    if connection is not None and model:
        for uses in EMBEDDING_USES:
            if model in uses(connection):
                return "embeddings"
    return "chat"


@transaction.atomic
def connection_test_request(*, connection: Connection, model: str = "", endpoint: str = "",
                            actor=None) -> ConnectionTest:
    """Queue a test of a saved connection's own settings (its result becomes its status).
    `endpoint`: "chat" or "embeddings" to choose the API called (default: `test_endpoint`)."""
    model = (model or connection.default_model or "").strip()
    test = ConnectionTest(
        kind=JobKind.TEST, connection=connection, connection_revision=connection.revision,
        provider=connection.provider, auth_method=connection.auth_method,
        base_url=connection.base_url, config=connection.config or {}, secrets=None, model=model,
        timeout_seconds=connection.timeout_seconds, endpoint=_check_endpoint(endpoint),
        requested_by=actor if getattr(actor, "pk", None) else None,
    )
    test.full_clean(exclude=["secrets"])
    test.save()
    audit_record(action="connection.test", target=connection, actor=actor,
                 extra={"test_id": str(test.pk), "model": model})
    _enqueue("connection_test_run_task", test)
    return test


_UNSET = object()


@transaction.atomic
def connection_test_request_unsaved(
    *,
    provider=_UNSET,
    auth_method=_UNSET,
    base_url=_UNSET,
    config=_UNSET,
    credentials: dict | None = None,
    model: str = "",
    connection: Connection | None = None,
    timeout_seconds=_UNSET,
    kind: str = JobKind.TEST,
    endpoint: str = "",
    actor=None,
) -> ConnectionTest:
    """Queue a test (or, with kind "discover", a model discovery) of settings that are not saved
    (e.g. a connection being edited); a discovery's result carries the model ids it found.
    `endpoint` as for connection_test_request.

    With `connection`, settings not sent default to that connection's, and its stored secrets
    fill the credential fields not sent, but only for the same destination
    (Connection.destination): a stored key never follows a changed URL, token URL or region
    (same rule as connection_update). A credential sent
    as null is left out.
    """
    credentials = credentials if credentials is not None else {}
    check_credentials_input(credentials, (connection.secret_hints or {}) if connection else {})
    if connection is not None:
        provider = connection.provider if provider is _UNSET else provider
        if auth_method is _UNSET and provider == connection.provider:
            auth_method = connection.auth_method
        base_url = connection.base_url if base_url is _UNSET else base_url
        config = (connection.config or {}) if config is _UNSET else config
        model = model or connection.default_model
        if timeout_seconds is _UNSET:
            timeout_seconds = connection.timeout_seconds
    if provider is _UNSET or not provider:
        raise ValidationFailed("provider is required.", fields={"provider": ["Required."]})
    auth_method = resolve_auth_method(provider, None if auth_method is _UNSET else auth_method)
    spec = find_provider(provider)
    base_url = spec.normalize_base_url(None if base_url is _UNSET else (base_url or None))
    config = {} if config is _UNSET or config is None else config
    timeout_seconds = None if timeout_seconds is _UNSET else timeout_seconds
    if kind not in JobKind.values:
        raise ValidationFailed(f"kind must be one of {', '.join(JobKind.values)}.",
                               fields={"kind": ["Unknown kind."]})

    secrets: dict = {}
    if connection is not None:
        allowed = set(spec.secret_field_names(auth_method) if spec.auth_method(auth_method) else ())
        reusable = [n for n in allowed if n not in credentials]
        # Destination binding: the stored secrets go only to the destination they were
        # entered for (the same comparison as connection_update).
        same_endpoint = spec.destination(base_url=base_url, auth_method=auth_method,
                                         config=config) == connection.destination
        if reusable and not connection.credentials_readable:
            raise ValidationFailed(
                "The saved connection's credentials cannot be decrypted: send them with the test.",
                code="credentials_unreadable",
                fields={"credentials": [f"Send: {', '.join(sorted(reusable))}."]})
        stored = {k: v for k, v in (connection.secrets or {}).items()
                  if k in allowed and k not in credentials} if connection.credentials_readable else {}
        if stored and not same_endpoint:
            raise ValidationFailed(
                "The destination differs from the saved connection's (provider, base URL "
                "scheme/host/port, a URL field or an endpoint field such as the region), so its "
                f"stored secrets will not be sent there: send {', '.join(sorted(stored))}.",
                code="credentials_required",
                fields={"credentials": [f"Send again: {', '.join(sorted(stored))}."]})
        secrets.update(stored)
    secrets.update({k: v for k, v in credentials.items() if v is not None})
    validate_connection_settings(provider=provider, auth_method=auth_method, base_url=base_url,
                                 config=config, secrets=secrets)
    test = ConnectionTest(
        kind=kind, connection=connection, connection_revision=None, provider=provider,
        auth_method=auth_method, base_url=base_url, config=config, secrets=secrets,
        model=(model or "").strip(), timeout_seconds=timeout_seconds,
        endpoint=_check_endpoint(endpoint),
        settings_digest=settings_digest(provider=provider, auth_method=auth_method,
                                        base_url=base_url, config=config, secrets=secrets,
                                        model=(model or "").strip(),
                                        timeout_seconds=timeout_seconds),
        requested_by=actor if getattr(actor, "pk", None) else None,
    )
    test.full_clean(exclude=["secrets"])
    test.save()
    audit_record(
        action="connection.discover" if kind == JobKind.DISCOVER else "connection.test",
        target=connection if connection is not None else ("connection", "", f"unsaved {provider}"),
        actor=actor,
        secret_fingerprints=secret_fingerprints(credentials),
        extra={"test_id": str(test.pk), "model": test.model, "unsaved": True,
               "provider": provider, "host": host_of(spec.effective_base_url(base_url))},
    )
    _enqueue("connection_discover_models_run_task" if kind == JobKind.DISCOVER
             else "connection_test_run_task", test)
    return test


def settings_digest(*, provider: str, auth_method: str, base_url, config: dict, secrets: dict,
                    model: str, timeout_seconds) -> str:
    """HMAC-SHA256 (keyed by SECRET_KEY) of settings as tested: equal digests, same settings."""
    body = json.dumps([provider, auth_method, base_url or None, config or {}, secrets or {},
                       model or "", timeout_seconds], sort_keys=True, separators=(",", ":"))
    return hmac.new(settings.SECRET_KEY.encode(), body.encode(), hashlib.sha256).hexdigest()


ADOPT_WITHIN = timedelta(minutes=30)


@transaction.atomic
def connection_test_adopt(*, connection: Connection, test_id, actor=None) -> bool:
    """Make a finished test of unsaved settings the status of `connection`, if it tested exactly
    the settings the connection now holds (digest), was asked by `actor`, and is recent.

    For the admin's add form: "Test connection" then "Save" keeps the result. Anything else
    (other settings, someone else's or an old test, a saved connection's test) is ignored.
    """
    try:
        test = ConnectionTest.objects.select_for_update().get(pk=test_id)
    except (ConnectionTest.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        return False  # no such test, or not an id at all
    current = Connection.objects.get(pk=connection.pk)
    if (test.kind != JobKind.TEST or test.connection_revision is not None
            or test.status not in (TestStatus.SUCCEEDED, TestStatus.FAILED)
            or not test.settings_digest or test.finished_at is None
            or test.requested_by_id != getattr(actor, "pk", None)
            or test.created_at < timezone.now() - ADOPT_WITHIN
            or not current.credentials_readable):
        return False
    digest = settings_digest(provider=current.provider, auth_method=current.auth_method,
                             base_url=current.base_url, config=current.config or {},
                             secrets=current.secrets or {},
                             model=current.default_model or "",
                             timeout_seconds=current.timeout_seconds)
    if not hmac.compare_digest(digest, test.settings_digest):
        return False
    test.connection, test.connection_revision = current, current.revision
    test.save(update_fields=["connection", "connection_revision"])
    _record_status(current.pk, current.revision, test.status == TestStatus.SUCCEEDED,
                   test.error_class, test.finished_at)
    return True


@transaction.atomic
def connection_discover_models_request(*, connection: Connection, actor=None) -> ConnectionTest:
    """Queue a model discovery for a saved connection."""
    job = ConnectionTest(
        kind=JobKind.DISCOVER, connection=connection, connection_revision=connection.revision,
        provider=connection.provider, auth_method=connection.auth_method,
        base_url=connection.base_url, config=connection.config or {}, secrets=None,
        model=connection.default_model or "", timeout_seconds=connection.timeout_seconds,
        requested_by=actor if getattr(actor, "pk", None) else None,
    )
    job.full_clean(exclude=["secrets"])
    job.save()
    audit_record(action="connection.discover", target=connection, actor=actor,
                 extra={"test_id": str(job.pk)})
    _enqueue("connection_discover_models_run_task", job)
    return job


# --- runs (worker side) ------------------------------------------------------------------------

def _settings_of_connection(connection: Connection, model: str) -> checks.ConnectionSettings:
    return checks.ConnectionSettings(
        provider=connection.provider, auth_method=connection.auth_method,
        base_url=connection.base_url, config=connection.effective_config,
        secrets=connection.secrets, model=model, timeout=connection.timeout_seconds)


def _start(test_id, kind: str) -> tuple[ConnectionTest | None, checks.ConnectionSettings | None]:
    """Lock a pending job, mark it running and return it with the settings to use."""
    with transaction.atomic():
        # of=("self",): PostgreSQL cannot lock the nullable side of the outer join.
        test = (ConnectionTest.objects.select_for_update(of=("self",))
                .select_related("connection").filter(pk=test_id, kind=kind).first())
        if test is None or test.status != TestStatus.PENDING:
            return test, None  # done, running elsewhere, reaped, or gone: nothing to do
        if test.connection_revision is not None:
            connection = test.connection
            if connection is None:
                return test, None
            # The saved connection as it is now (secrets included), not a copy.
            test.provider, test.auth_method = connection.provider, connection.auth_method
            test.base_url, test.config = connection.base_url, connection.config or {}
            test.connection_revision = connection.revision
            test.timeout_seconds = connection.timeout_seconds
            if test.kind == JobKind.TEST and not test.model:
                test.model = connection.default_model or ""
            s = _settings_of_connection(connection, test.model)
        else:
            s = checks.ConnectionSettings(
                provider=test.provider, auth_method=test.auth_method, base_url=test.base_url,
                config=config_with_defaults(test.provider, test.auth_method, test.config or {}),
                secrets=test.secrets, model=test.model, timeout=test.timeout_seconds)
        if test.kind == JobKind.TEST:
            test.endpoint = test_endpoint(connection=test.connection, provider=test.provider,
                                          model=test.model, endpoint=test.endpoint)
            s = dataclasses.replace(s, endpoint=test.endpoint)
        test.status = TestStatus.RUNNING
        test.started_at = timezone.now()
        test.save(update_fields=["status", "started_at", "provider", "auth_method", "base_url",
                                 "config", "connection_revision", "model", "timeout_seconds",
                                 "endpoint"])
    return test, s


def _finish(test: ConnectionTest, *, ok: bool, error_class: str = "", message: str,
            latency_ms: int | None = None, models_found: int | None = None,
            model_ids: list[str] | None = None,
            update_connection: bool = True) -> ConnectionTest:
    """Store a job's result (only if it is still running) and empty its secrets."""
    now = timezone.now()
    with transaction.atomic():
        current = ConnectionTest.objects.select_for_update().filter(pk=test.pk).first()
        if current is None or current.status != TestStatus.RUNNING:
            return current or test  # reaped meanwhile: its failure stands
        current.status = TestStatus.SUCCEEDED if ok else TestStatus.FAILED
        current.error_class = "" if ok else (error_class or ErrorClass.PROVIDER_ERROR)
        current.message = message[:2000]
        current.latency_ms = latency_ms
        current.models_found = models_found
        current.model_ids = model_ids
        current.finished_at = now
        current.secrets = None
        current.save(update_fields=["status", "error_class", "message", "latency_ms",
                                    "models_found", "model_ids", "finished_at", "secrets",
                                    "secrets_key_id"])
        if update_connection and current.connection_id and current.connection_revision is not None:
            _record_status(current.connection_id, current.connection_revision, ok,
                           current.error_class, now)
    _count(current, ok)
    return current


def _count(test: ConnectionTest, ok: bool) -> None:
    """Count a finished test or discovery in the metrics (llmconn/metrics.py)."""
    connection = test.connection if test.connection_id else None
    metrics.observe_connection_test(kind=test.kind, provider=test.provider, ok=ok,
                                    connection_name=connection.name if connection else "",
                                    error_class=test.error_class)


def _record_status(connection_id, revision, ok: bool, error_class: str, when) -> None:
    # update(), not save(): status is not a settings change (no revision bump, secrets untouched).
    Connection.objects.filter(pk=connection_id, revision=revision).update(
        status=ConnectionStatus.OK if ok else ConnectionStatus.FAILED,
        last_tested_at=when, last_error_class="" if ok else error_class)


def connection_test_run(*, test_id) -> ConnectionTest | None:
    """Run a pending connection test (no-op unless pending) and store its result."""
    test, s = _start(test_id, JobKind.TEST)
    if s is None:
        return test
    try:
        outcome = checks.test_connection(s, timeout=s.timeout or TEST_TIMEOUT_S)
    except BaseException as exc:  # SoftTimeLimitExceeded, anything unexpected: still recorded
        err = classify(exc, host=_safe_host(s))
        _finish(test, ok=False, error_class=err.error_class, message=err.message)
        if not isinstance(exc, Exception):
            raise
        logger.warning("Connection test %s failed unexpectedly (%s)", test.pk, err.error_class)
        return test
    if outcome.ok:
        called = f"/{test.endpoint}" if test.endpoint == "embeddings" else "/chat/completions"
        message = f"{outcome.message} ({called}, {outcome.latency_ms} ms)" if test.model \
            else f"{outcome.message} ({outcome.latency_ms} ms)"
    else:
        message = outcome.message
    logger.info("Connection test %s: %s %s", test.pk, "ok" if outcome.ok else "failed",
                outcome.error_class)
    return _finish(test, ok=outcome.ok, error_class=outcome.error_class, message=message,
                   latency_ms=outcome.latency_ms,
                   models_found=len(outcome.models) if outcome.models else None)


def _safe_host(s: checks.ConnectionSettings) -> str:
    try:
        return s.host
    except Exception:
        return ""


def connection_discover_models_run(*, test_id) -> ConnectionTest | None:
    """Run a pending discovery: store the models found; a failure keeps the previous list."""
    job, s = _start(test_id, JobKind.DISCOVER)
    if s is None:
        return job
    started = timezone.now()
    live = checks.has_live_listing(s.provider)
    try:
        found = checks.list_models(s, timeout=s.timeout or TEST_TIMEOUT_S)
    except BaseException as exc:
        err = exc if isinstance(exc, ProviderError) else classify(exc, host=_safe_host(s),
                                                                   listing=True)
        _finish(job, ok=False, error_class=err.error_class,
                message=f"Model discovery failed: {err.message}", update_connection=False)
        if not isinstance(exc, Exception):
            raise
        return job
    latency = int((timezone.now() - started).total_seconds() * 1000)
    model_ids = sorted({m[:300] for m in found})
    if job.connection_revision is not None:  # a saved connection's list; unsaved: the job's only
        with transaction.atomic():
            current = ConnectionTest.objects.select_for_update().filter(pk=job.pk).first()
            if current is None or current.status != TestStatus.RUNNING:
                return current
            _store_models(job.connection_id, found, source="live" if live else "catalog")
    source = "listed by the provider" if live else "from the catalog (no listing endpoint)"
    return _finish(job, ok=True, message=f"Found {len(model_ids)} models, {source}.",
                   latency_ms=latency, models_found=len(model_ids), model_ids=model_ids,
                   update_connection=False)


def _store_models(connection_id, model_ids: list[str], *, source: str) -> None:
    now = timezone.now()
    model_ids = sorted({m[:300] for m in model_ids})
    removed, _ = DiscoveredModel.objects.filter(connection_id=connection_id).exclude(
        model_id__in=model_ids).delete()
    existing = set(DiscoveredModel.objects.filter(connection_id=connection_id)
                   .values_list("model_id", flat=True))
    DiscoveredModel.objects.filter(connection_id=connection_id).update(
        discovered_at=now, metadata={"source": source})
    DiscoveredModel.objects.bulk_create([
        DiscoveredModel(connection_id=connection_id, model_id=m, discovered_at=now,
                        metadata={"source": source})
        for m in model_ids if m not in existing
    ])
    if removed or set(model_ids) - existing:
        # The gateway accepts the new model names (an unchanged list changes nothing cached):
        # updated_at tells processes the connection's models changed (not `revision`, which
        # tests of its settings are matched against).
        Connection.objects.filter(pk=connection_id).update(updated_at=now)
        bump_connections(connection_id)


# --- reaper ------------------------------------------------------------------------------------

def _is_stale(test: ConnectionTest, now) -> bool:
    if test.status == TestStatus.RUNNING:
        limit = RUNNING_LIMIT_S + _extra_time(test.timeout_seconds)
        return bool(test.started_at) and test.started_at < now - timedelta(seconds=limit)
    if test.status == TestStatus.PENDING:
        return test.created_at < now - timedelta(seconds=PENDING_LIMIT_S)
    return False


def connection_tests_reap(*, test_ids=None, now=None) -> int:
    """Fail jobs stuck running past their limit or never picked up; prune old finished ones."""
    now = now or timezone.now()
    stale_q = (Q(status=TestStatus.RUNNING, started_at__lt=now - timedelta(seconds=RUNNING_LIMIT_S))
               | Q(status=TestStatus.PENDING, created_at__lt=now - timedelta(seconds=PENDING_LIMIT_S)))
    qs = ConnectionTest.objects.filter(stale_q)
    if test_ids is not None:
        qs = qs.filter(pk__in=test_ids)
    reaped = 0
    for pk in list(qs.values_list("pk", flat=True)[:1000]):
        with transaction.atomic():
            test = ConnectionTest.objects.select_for_update().filter(pk=pk).filter(stale_q).first()
            if test is None or not _is_stale(test, now):  # a long timeout_seconds runs longer
                continue
            running = test.status == TestStatus.RUNNING
            test.status = TestStatus.FAILED
            test.error_class = ErrorClass.TIMEOUT
            test.message = (REAPED_RUNNING_MESSAGE if running else
                            REAPED_PENDING_MESSAGE.format(minutes=PENDING_LIMIT_S // 60))
            test.finished_at = now
            test.secrets = None
            test.save(update_fields=["status", "error_class", "message", "finished_at",
                                     "secrets", "secrets_key_id"])
            reaped += 1
    if reaped:
        logger.warning("Reaped %d connection test(s) stuck past their time limit", reaped)
    if test_ids is None:
        ConnectionTest.objects.filter(
            status__in=[TestStatus.SUCCEEDED, TestStatus.FAILED],
            created_at__lt=now - RETENTION).delete()
    return reaped


# --- health sweep ------------------------------------------------------------------------------

def connection_health_sweep(
    *,
    connections: QuerySet[Connection] | list[Connection] | None = None,
    concurrency: int | None = None,
    timeout: float = TEST_TIMEOUT_S,
    deadline: float | None = SWEEP_DEADLINE_S,
    on_result=None,
    actor=None,
) -> list[ConnectionTest]:
    """Test many connections at once (default: every active one) and record each result.

    Calls run concurrently in one event loop (at most `concurrency` at a time); results are
    written when all are in, as finished ConnectionTest rows, and update each connection's
    status. `on_result(connection, outcome)` is called as each finishes (progress).
    """
    if connections is None:
        connections = Connection.objects.filter(is_active=True)
    connections = list(connections)
    concurrency = concurrency or getattr(settings, "LLMCONN_SWEEP_CONCURRENCY", SWEEP_CONCURRENCY)
    by_id = {c.pk: c for c in connections}
    items = [(c.pk, _settings_of_connection(c, c.default_model or "")) for c in connections]
    started = timezone.now()
    callback = (lambda pk, outcome: on_result(by_id[pk], outcome)) if on_result else None
    outcomes = checks.test_many(items, concurrency=concurrency, timeout=timeout,
                                on_result=callback, deadline=deadline)
    finished = timezone.now()
    rows = []
    for c in connections:
        outcome = outcomes[c.pk]
        rows.append(ConnectionTest(
            kind=JobKind.TEST, connection=c, connection_revision=c.revision, provider=c.provider,
            auth_method=c.auth_method, base_url=c.base_url, config=c.config or {}, secrets=None,
            model=outcome.model, status=TestStatus.SUCCEEDED if outcome.ok else TestStatus.FAILED,
            error_class=outcome.error_class, message=(
                f"{outcome.message} ({outcome.latency_ms} ms)" if outcome.ok else outcome.message),
            latency_ms=outcome.latency_ms,
            requested_by=actor if getattr(actor, "pk", None) else None,
            started_at=started, finished_at=finished,
        ))
    # One UPDATE per distinct outcome (ok, or failed with an error class), not one per row:
    # each still matches (id, revision), so a connection changed meanwhile keeps its status.
    outcomes_by_class: dict[tuple[bool, str], list[ConnectionTest]] = {}
    for row in rows:
        ok = row.status == TestStatus.SUCCEEDED
        outcomes_by_class.setdefault((ok, "" if ok else row.error_class), []).append(row)
    with transaction.atomic():
        ConnectionTest.objects.bulk_create(rows)
        for (ok, error_class), group in outcomes_by_class.items():
            for start in range(0, len(group), 500):
                match = Q()
                for row in group[start:start + 500]:
                    match |= Q(pk=row.connection_id, revision=row.connection_revision)
                Connection.objects.filter(match).update(
                    status=ConnectionStatus.OK if ok else ConnectionStatus.FAILED,
                    last_tested_at=finished, last_error_class=error_class)
    for row in rows:
        _count(row, row.status == TestStatus.SUCCEEDED)
    return rows


def connection_health_sweep_locked(**kwargs) -> list[ConnectionTest] | None:
    """The periodic sweep: skipped (None) while another sweep holds the lock."""
    if not cache.add(SWEEP_LOCK_KEY, "1", timeout=SWEEP_HARD_LIMIT_S):
        logger.info("A connection health sweep is already running; skipping this one")
        return None
    try:
        return connection_health_sweep(**kwargs)
    finally:
        cache.delete(SWEEP_LOCK_KEY)


# --- in-process check (no job row) --------------------------------------------------------------

def test_connection_settings(connection: Connection, *, model: str = "",
                             timeout: float = TEST_TIMEOUT_S) -> checks.TestOutcome:
    """Test a (possibly unsaved) Connection's settings now, in this process; nothing is stored.

    For callers that must decide synchronously (staged secret rotation). Never raises for a
    provider failure: the outcome carries error_class and our own message.
    """
    s = _settings_of_connection(connection, model or connection.default_model or "")
    try:
        return checks.test_connection(s, timeout=s.timeout or timeout)
    except Exception as exc:
        err = classify(exc, host=_safe_host(s))
        return checks.TestOutcome(False, 0, s.model, err.error_class, err.message)


test_connection_settings.__test__ = False  # not a pytest test, despite the name
