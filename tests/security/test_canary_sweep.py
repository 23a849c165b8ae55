"""The secret canary sweep: connections whose secrets are canaries (an API key, an OAuth client
secret, a custom header value, and the key a rotation brings in) go through their whole life:
created (and refused a few times), edited, tested (succeeding, failing, and against an upstream
that echoes the key back in its error), discovered, used through /v1 (chat, stream,
embeddings, an echoing provider error), rotated (rotate-secret, rollback-secret, rotate_keys
under a new Fernet key), exported and deleted. Then no canary, nor any 12-character slice of
one, may appear in:

- any API or gateway response (bodies and headers), the browsable API;
- the admin pages (connection list, change and history, audit log, workspace, API keys);
- log records at DEBUG (litellm's included) and anything written to stdout/stderr;
- stored messages (ConnectionTest.message) and audit rows;
- Celery messages and results: a real worker on Redis, and EVERY key of the Redis db read back
  (strings, lists, hashes, sets; kombu message bodies decoded);
- the export file, /readyz;
- the raw database: every column of every table, as text.

Positive controls prove the sweep is not vacuous: the upstream saw each canary, the database
held rows, logs and Redis held what we scanned.

With REDIS_URL (CI) the tasks run on a real worker (tests/connections/test_tasks_worker.py's
fixtures); without it, the same sweep runs with eager tasks and the Redis part cannot be checked.
"""

from __future__ import annotations

import io
import json
import logging
import time
import traceback

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection as db_connection
from django.test import Client, override_settings
from rest_framework.test import APIClient

from audit.models import AuditEvent
from connections.models import Connection, ConnectionTest
from tests.connections.test_tasks_worker import (  # noqa: F401  (fixtures)
    on_redis,
    redis_client,
    redis_dump,
    start,
)

from .support import leaks

pytestmark = pytest.mark.django_db(transaction=True)

API_KEY = "cnry-apikey-7f3a9c1e5b2d4a6f8e0c91"
CLIENT_SECRET = "cnry-oauth-1b2c3d4e5f60718293a4b5"
HEADER_VALUE = "cnry-header-a9b8c7d6e5f4a3b2c1d0e9"
ROTATED = "cnry-rotated-0f1e2d3c4b5a69788796a5"
# Another user's personal connection: staff may not see even its hint (its last four).
PERSONAL = "cnry-personal-5e6d7c8b9a0f1e2dZx7Q"
CANARIES = (API_KEY, CLIENT_SECRET, HEADER_VALUE, ROTATED, PERSONAL)
NEW_FERNET_KEY = "security-sweep-new-fernet-key"

C = "/api/v1/connections/"


class Recorder:
    """Every response (status, headers, body) the sweep received, to be scanned at the end."""

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def add(self, what: str, response, body: bytes | None = None) -> None:
        if body is None:  # a stream's body is passed in by whoever consumed it
            body = b"" if getattr(response, "streaming", False) else response.content
        self.seen.append((what, f"{response.status_code} {dict(response.items())}\n"
                                f"{body.decode(errors='replace')}"))
        assert response.status_code < 500, (what, body[:500])


class Sweep:
    """The staff API client, the admin browser and the gateway, all recorded."""

    def __init__(self, staff_user, recorder: Recorder):
        self.api = APIClient()
        self.api.force_authenticate(staff_user)
        self.browser = Client()
        self.browser.force_login(staff_user)
        self.rec = recorder

    def call(self, method: str, path: str, body=None, expect: int | None = None):
        caller = getattr(self.api, method)
        response = caller(path, body, format="json") if body is not None else caller(path)
        self.rec.add(f"{method.upper()} {path}", response)
        if expect is not None:
            assert response.status_code == expect, (path, response.content[:500])
        return response

    def page(self, path: str):
        response = self.browser.get(path, follow=True)
        self.rec.add(f"admin {path}", response)
        assert response.status_code == 200, path
        return response

    def wait(self, test_id: str, seconds: float = 60) -> dict:
        deadline = time.monotonic() + seconds
        while True:
            body = self.call("get", f"/api/v1/connection-tests/{test_id}/").json()
            if body["status"] in ("succeeded", "failed"):
                return body
            assert time.monotonic() < deadline, f"test {test_id} still {body['status']}"
            time.sleep(0.1)


def _create(sweep: Sweep, upstream) -> dict:
    """Three connections with canary secrets (and refused attempts that carry them)."""
    common = {"provider": "openai_compatible", "base_url": upstream.openai_url,
              "default_model": "test-model"}
    api = sweep.call("post", C, {**common, "name": "canary-key", "auth_method": "api_key",
                                 "credentials": {"api_key": API_KEY}}, expect=201).json()
    oauth = sweep.call("post", C, {
        **common, "name": "canary-oauth", "auth_method": "oauth_client_credentials",
        "config": {"token_url": upstream.token_url, "client_id": "client-1"},
        "credentials": {"client_secret": CLIENT_SECRET}}, expect=201).json()
    header = sweep.call("post", C, {
        **common, "name": "canary-header", "auth_method": "custom_header",
        "default_model": "test-embedding", "config": {"header_name": "X-Team-Key"},
        "credentials": {"header_value": HEADER_VALUE}}, expect=201).json()
    anthropic = sweep.call("post", C, {
        "name": "canary-anthropic", "provider": "anthropic", "auth_method": "api_key",
        "base_url": upstream.anthropic_url, "default_model": "claude-haiku-4-5",
        "credentials": {"api_key": API_KEY}}, expect=201).json()
    # Refused while carrying canaries: duplicate name, unknown provider, a secret in config,
    # a secret value in an unknown field and an unknown credential field. (A canary sent as a
    # provider name or a field NAME is the caller's own text and may be quoted back.)
    sweep.call("post", C, {**common, "name": "canary-key", "auth_method": "api_key",
                           "credentials": {"api_key": API_KEY}}, expect=400)
    sweep.call("post", C, {"name": "x", "provider": "nope", "credentials": {"api_key": API_KEY}},
               expect=400)
    sweep.call("post", C, {**common, "name": "y", "auth_method": "api_key",
                           "config": {"api_key": API_KEY}, "credentials": {"api_key": API_KEY}},
               expect=400)
    sweep.call("post", C, {**common, "name": "z", "auth_method": "api_key", "colour": API_KEY,
                           "credentials": {"api_key": API_KEY}}, expect=400)
    sweep.call("post", C, {**common, "name": "w", "auth_method": "api_key",
                           "credentials": {"api_key": API_KEY, "nope": HEADER_VALUE}},
               expect=400)
    sweep.call("post", f"{C}from-preset/", {"preset": "openai", "name": "p",
                                            "credentials": {"api_key": API_KEY}}, expect=201)
    return {"api": api, "oauth": oauth, "header": header, "anthropic": anthropic}


def _edit(sweep: Sweep, conns: dict, upstream) -> None:
    api = f"{C}{conns['api']['id']}/"
    sweep.call("patch", api, {"credentials": {"api_key": API_KEY}}, expect=200)
    sweep.call("patch", api, {"credentials": {"api_key": API_KEY[:6] + "****" + API_KEY[-4:]}},
               expect=400)
    sweep.call("patch", api, {"base_url": "https://elsewhere.example.com/v1"}, expect=400)
    sweep.call("patch", api, {"credentials": {"api_key": API_KEY}, "is_active": API_KEY},
               expect=400)
    sweep.call("patch", f"{C}{conns['oauth']['id']}/",
               {"credentials": {"client_secret": CLIENT_SECRET}, "name": "canary-oauth"},
               expect=200)
    sweep.call("patch", f"{C}{conns['header']['id']}/",
               {"credentials": {"header_value": HEADER_VALUE}}, expect=200)
    for conn in conns.values():
        sweep.call("get", f"{C}{conn['id']}/", expect=200)
        sweep.call("get", f"{C}{conn['id']}/?format=api", expect=200)
    sweep.call("get", C, expect=200)
    sweep.call("get", f"{C}?search={API_KEY}", expect=200)


def _test(sweep: Sweep, conns: dict, upstream) -> None:
    for conn in conns.values():
        job = sweep.call("post", f"{C}{conn['id']}/test/", {}, expect=202).json()
        result = sweep.wait(job["id"])
        assert result["status"] == "succeeded", (conn["name"], result)
    unsaved = sweep.call("post", "/api/v1/connection-tests/", {
        "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": upstream.openai_url, "default_model": "test-model",
        "credentials": {"api_key": API_KEY}}, expect=202).json()
    assert sweep.wait(unsaved["id"])["status"] == "succeeded"
    # Failures: the upstream refuses, and echoes the presented key in its error.
    for mode, status in (("echo_key", 401), ("echo_key", 400), ("echo_key", 500), (401, None)):
        upstream.set_mode(mode, status=status)
        for name in ("api", "header", "anthropic"):
            job = sweep.call("post", f"{C}{conns[name]['id']}/test/", {}, expect=202).json()
            assert sweep.wait(job["id"])["status"] == "failed"
        job = sweep.call("post", "/api/v1/connection-tests/", {
            "connection": conns["api"]["id"], "credentials": {"api_key": API_KEY}},
            expect=202).json()
        assert sweep.wait(job["id"])["status"] == "failed"
    upstream.set_mode("ok")
    job = sweep.call("post", f"{C}{conns['api']['id']}/discover-models/", expect=202).json()
    assert sweep.wait(job["id"])["status"] == "succeeded"
    sweep.call("get", f"{C}{conns['api']['id']}/models/", expect=200)
    sweep.call("get", "/api/v1/connection-tests/", expect=200)


def _use(sweep: Sweep, conns: dict, upstream, gateway) -> str:
    ws = sweep.call("post", "/api/v1/workspaces/", {"name": "Canary", "bindings": {
        "chat": {"connection": conns["api"]["id"]},
        "agent": {"connection": conns["anthropic"]["id"]},
        "embedding": {"connection": conns["header"]["id"], "model": "test-embedding"}}},
        expect=201).json()
    key = sweep.call("post", f"/api/v1/workspaces/{ws['slug']}/api-keys/", {"name": "k"},
                     expect=201).json()["key"]
    sweep.call("get", f"/api/v1/workspaces/{ws['slug']}/resolved/", expect=200)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    for model in ("chat", "agent"):
        sweep.rec.add(f"/v1 {model}", gateway.post("/v1/chat/completions", key,
                                                    {**chat, "model": model}))
        response, chunks = gateway.stream("/v1/chat/completions", key,
                                          {**chat, "model": model, "stream": True})
        sweep.rec.add(f"/v1 stream {model}", response, "\n".join(chunks).encode())
        assert chunks and chunks[-1] == "[DONE]", chunks[-2:]
    sweep.rec.add("/v1 embeddings", gateway.post("/v1/embeddings", key,
                                                 {"model": "embedding", "input": "x"}))
    sweep.rec.add("/v1 models", gateway.get("/v1/models", key))
    upstream.set_mode("echo_key", status=400)
    for model in ("chat", "agent"):
        response = gateway.post("/v1/chat/completions", key, {**chat, "model": model})
        sweep.rec.add(f"/v1 echo {model}", response)
        assert response.status_code == 400
    upstream.set_mode("ok")
    # The oauth connection through /v1 too: bind it and call.
    sweep.call("patch", f"/api/v1/workspaces/{ws['slug']}/", {"bindings": {
        "chat": {"connection": conns["oauth"]["id"]}}}, expect=200)
    response = gateway.post("/v1/chat/completions", key, {**chat, "model": "chat"})
    sweep.rec.add("/v1 oauth", response)
    assert response.status_code == 200, response.content
    sweep.call("get", "/api/v1/usage/?group_by=connection", expect=200)
    return ws["slug"]


def _rotate(sweep: Sweep, conns: dict) -> None:
    api = f"{C}{conns['api']['id']}/"
    sweep.call("post", f"{api}rotate-secret/", {"credentials": {"api_key": "cnry-wrong-key-000"
                                                                           "1234567890abc"}},
               expect=400)
    sweep.call("post", f"{api}rotate-secret/", {"credentials": {"api_key": ROTATED}},
               expect=200)
    sweep.call("post", f"{api}rollback-secret/", expect=200)
    sweep.call("post", f"{api}rotate-secret/", {"credentials": {"api_key": ROTATED}},
               expect=200)
    out = io.StringIO()
    with override_settings(FERNET_KEYS=[NEW_FERNET_KEY, *settings.FERNET_KEYS]):
        call_command("rotate_keys", stdout=out, stderr=out)
        sweep.rec.seen.append(("rotate_keys output", out.getvalue()))
        assert Connection.objects.get(pk=conns["api"]["id"]).secrets == {"api_key": ROTATED}


def _admin(sweep: Sweep, conns: dict, slug: str) -> None:
    sweep.page("/admin/connections/connection/")
    for conn in conns.values():
        sweep.page(f"/admin/connections/connection/{conn['id']}/change/")
        sweep.page(f"/admin/connections/connection/{conn['id']}/history/")
    sweep.page("/admin/audit/auditevent/")
    for event in AuditEvent.objects.order_by("-id")[:10]:
        sweep.page(f"/admin/audit/auditevent/{event.pk}/change/")
    from workspaces.models import Workspace

    workspace = Workspace.objects.get(slug=slug)
    sweep.page(f"/admin/workspaces/workspace/{workspace.pk}/change/")
    sweep.page("/admin/workspaces/workspaceapikey/")
    sweep.page("/admin/workspaces/usagerecord/")


def _personal(sweep: Sweep, upstream) -> None:
    """A non-staff user's personal connection (its secret a canary, its config a marker):
    staff's admin pages of it show metadata only, not even the hint (checked here: the sweep's
    slices are 12 characters), and staff may only deactivate it."""
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("sweep-owner", "o@example.com", "pw-o-1234")
    owner_api = APIClient()
    owner_api.force_authenticate(owner)
    response = owner_api.post(C, {
        "name": "canary-personal", "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": upstream.openai_url, "default_model": "test-model",
        "config": {"extra_headers": {"X-Sweep": "personal-cfg-marker"}},
        "credentials": {"api_key": PERSONAL}}, format="json")
    sweep.rec.add("POST personal", response)
    assert response.status_code == 201, response.content[:500]
    change = f"/admin/connections/connection/{response.json()['id']}/change/"
    for path in (change, change + "?change_provider=1", "/admin/connections/connection/",
                 f"/admin/auth/user/{owner.pk}/change/"):
        html = sweep.page(path).content.decode()
        assert PERSONAL[-4:] not in html and "personal-cfg-marker" not in html, path
    deactivated = sweep.browser.post(change, {"deactivate": "Deactivate"}, follow=True)
    sweep.rec.add("admin deactivate personal", deactivated)
    assert Connection.objects.get(name="canary-personal").is_active is False


def _delete(sweep: Sweep, conns: dict, slug: str) -> None:
    sweep.call("delete", f"/api/v1/workspaces/{slug}/", expect=204)
    for conn in conns.values():
        sweep.call("delete", f"{C}{conn['id']}/", expect=204)
    sweep.call("get", "/api/v1/audit-events/?target=connection", expect=200)
    for event in AuditEvent.objects.order_by("-id")[:20]:
        sweep.call("get", f"/api/v1/audit-events/{event.pk}/", expect=200)


def database_text() -> str:
    """Every value of every table, as text (bytes decoded as latin-1)."""
    parts = []
    with db_connection.cursor() as cursor:
        for table in db_connection.introspection.table_names():
            quoted = db_connection.ops.quote_name(table)
            cursor.execute(f"SELECT * FROM {quoted}")  # noqa: S608 - names from introspection
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, memoryview):
                        value = value.tobytes()
                    if isinstance(value, bytes):
                        value = value.decode("latin-1")
                    parts.append(str(value))
    return "\n".join(parts)


def run_sweep(*, staff_user, upstream, gateway, caplog, capfd, tmp_path, redis=None) -> None:
    root = logging.getLogger()
    if caplog.handler not in root.handlers:  # a Celery worker set-up replaces root's handlers
        root.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "django", "django.db.backends",
                 "celery", "httpx", "httpcore", "workspaces", "connections", "providers"):
        caplog.set_level(logging.DEBUG, logger=name)
    upstream.api_keys = {API_KEY, ROTATED, HEADER_VALUE}
    upstream.key_headers.add("x-team-key")
    upstream.oauth_clients = {"client-1": CLIENT_SECRET}
    rec = Recorder()
    sweep = Sweep(staff_user, rec)
    db_connection.force_debug_cursor = True  # SQL with parameters is logged at DEBUG
    try:
        conns = _create(sweep, upstream)
        _edit(sweep, conns, upstream)
        _test(sweep, conns, upstream)
        slug = _use(sweep, conns, upstream, gateway)
        _rotate(sweep, conns)
        _admin(sweep, conns, slug)
        _personal(sweep, upstream)
        export = tmp_path / "export.json"
        call_command("export_connections", output=str(export), stderr=io.StringIO())
        ready = Client().get("/readyz")
        rec.add("/readyz", ready)
        stored = [t.message for t in ConnectionTest.objects.all()]
        _delete(sweep, conns, slug)
    finally:
        db_connection.force_debug_cursor = False

    # Positive controls: the canaries were really used, and there was something to scan.
    seen = upstream.keys_seen()
    assert API_KEY in seen and ROTATED in seen and HEADER_VALUE in seen
    assert CLIENT_SECRET in [r.key for r in upstream.requests_to("/oauth/token")]
    assert any("Incorrect API key" in m for m in stored) is False  # our own messages only
    assert len(stored) >= 20 and AuditEvent.objects.count() >= 20
    assert any(r.name.startswith("LiteLLM") for r in caplog.records), "no litellm DEBUG log"
    assert any("INSERT" in r.getMessage() for r in caplog.records), "no SQL log"

    found: list[tuple[str, list[str]]] = []

    def scan(where: str, text: str) -> None:
        hit = leaks(text, CANARIES)
        if hit:
            found.append((where, hit))

    for what, text in rec.seen:
        scan(f"response {what}", text)
    for record in caplog.records:
        scan(f"log {record.name}", record.getMessage())
        if record.exc_text:
            scan(f"log traceback {record.name}", record.exc_text)
        if record.exc_info and record.exc_info[1] is not None:  # what error trackers read
            scan(f"log exception {record.name}",
                 "".join(traceback.format_exception(*record.exc_info)))
    out, err = capfd.readouterr()
    scan("stdout", out)
    scan("stderr", err)
    for message in stored:
        scan("ConnectionTest.message", message)
    for event in AuditEvent.objects.all():
        scan(f"audit {event.action}", json.dumps(
            {f.name: str(getattr(event, f.attname)) for f in event._meta.fields}))
    scan("export file", export.read_text())
    scan("database", database_text())
    if redis is not None:
        dump = redis_dump(redis)
        assert "celery-task-meta-" in dump, "no Celery result in Redis: nothing was scanned"
        scan("redis", dump)
    assert not found, f"canary found in: {found}"


@pytest.mark.skipif(bool(settings.REDIS_URL), reason="REDIS_URL is set: the sweep runs through "
                    "a real worker on Redis instead (test_canary_sweep_through_a_real_worker)")
def test_canary_sweep_with_eager_tasks_finds_no_secret_anywhere(
        staff_user, upstream, gateway, caplog, capfd, tmp_path):
    run_sweep(staff_user=staff_user, upstream=upstream, gateway=gateway, caplog=caplog,
              capfd=capfd, tmp_path=tmp_path)


@pytest.mark.redis
@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis: set REDIS_URL (CI does) to "
                    "run the sweep through a real Celery worker and scan every Redis key")
def test_canary_sweep_through_a_real_worker_finds_no_secret_anywhere_redis_included(
        staff_user, upstream, gateway, caplog, capfd, tmp_path, on_redis, start, redis_client):
    with start():
        run_sweep(staff_user=staff_user, upstream=upstream, gateway=gateway, caplog=caplog,
                  capfd=capfd, tmp_path=tmp_path, redis=redis_client)
