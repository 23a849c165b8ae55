"""Log lines: the request id of their unit of work, and the JSON format."""

from __future__ import annotations

import json
import logging

import pytest
from llmconn.logs import JsonFormatter, RequestIdFilter
from llmconn.redaction import REDACTED, remember
from llmconn.tracing import new_request_id, reset_request_id, set_request_id
from tests.metrics.conftest import asgi_app  # noqa: F401 - imports llmconn.asgi at set-up
from tests.workspaces.conftest import (  # noqa: F401 - the gateway tests' fixtures
    _fresh_resolution_cache,
    make_connection,
    make_key,
)


def request_id_of(record: logging.LogRecord) -> str:
    """The request id the console handler prints for `record` (its RequestIdFilter)."""
    RequestIdFilter().filter(record)
    return record.request_id


def test_json_lines_carry_the_request_id_and_a_redacted_traceback(canary, caplog):
    remember(canary)
    token = set_request_id("req_json_test")
    try:
        with caplog.at_level(logging.INFO):
            try:
                raise RuntimeError(f"bad key {canary}")
            except RuntimeError:
                logging.getLogger("llmconn.test").exception("failed for %s", "x")
    finally:
        reset_request_id(token)
    line = JsonFormatter().format(caplog.records[-1])
    assert "\n" not in line
    data = json.loads(line)
    assert data["request_id"] == "req_json_test"
    assert data["message"] == "failed for x" and data["level"] == "ERROR"
    assert f"RuntimeError: bad key {REDACTED}" in data["exc_info"] and canary not in line


def test_a_line_outside_any_unit_of_work_says_so(caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("llmconn.test").info("idle")
    assert request_id_of(caplog.records[-1]) == "-"


def test_plain_format_shows_the_request_id(caplog):
    from django.conf import settings

    fmt = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])
    token = set_request_id("req_plain")
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("llmconn.test").info("hello")
    finally:
        reset_request_id(token)
    record = caplog.records[-1]
    RequestIdFilter().filter(record)
    assert "[req_plain]: hello" in fmt.format(record)


def test_a_caller_may_still_pass_its_own_request_id_as_extra(caplog):
    token = set_request_id("req_context")
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("llmconn.test").info("mine", extra={"request_id": "req_mine"})
    finally:
        reset_request_id(token)
    assert request_id_of(caplog.records[-1]) == "req_mine"


@pytest.mark.django_db
def test_every_line_of_a_connection_test_carries_the_tests_id(
        staff_client, upstream, caplog, django_capture_on_commit_callbacks):
    from connections.services import connection_create
    from tests.conftest import UPSTREAM_KEY

    conn = connection_create(name="traced", provider="openai_compatible", auth_method="api_key",
                             base_url=upstream.openai_url, default_model="test-model",
                             credentials={"api_key": UPSTREAM_KEY})
    with caplog.at_level(logging.DEBUG):
        with django_capture_on_commit_callbacks(execute=True):
            test_id = staff_client.post(f"/api/v1/connections/{conn.pk}/test/").json()["id"]
    during = [r for r in caplog.records if r.name.startswith(("connections", "providers"))]
    assert any(f"Connection test {test_id}" in r.getMessage() for r in during)
    assert during and {request_id_of(r) for r in during} == {test_id}


@pytest.mark.django_db
def test_every_line_of_a_v1_call_carries_its_request_id(
        asgi_app, caplog, upstream, closed_port_url, make_connection, make_key):
    from tests.metrics.conftest import asgi_request
    from workspaces import services

    down = make_connection(upstream, name="traced-down", base_url=closed_port_url)
    up = make_connection(upstream, name="traced-up")
    ws = services.workspace_create(name="Traced", bindings={"chat": {
        "connection": str(down.pk), "fallbacks": [{"connection": str(up.pk)}]}})
    key = make_key(ws)

    request_id = new_request_id()
    # Set here as the gateway sets it per call (llmconn.tracing); also sent as x-request-id,
    # which the gateway keeps when it is well-formed.
    token = set_request_id(request_id)
    try:
        with caplog.at_level(logging.DEBUG):
            response = asgi_request(asgi_app, "POST", "/v1/chat/completions",
                                    headers={"Authorization": f"Bearer {key}",
                                             "x-request-id": request_id},
                                    json={"model": "chat",
                                          "messages": [{"role": "user", "content": "hi"}]})
    finally:
        reset_request_id(token)
    assert response.status_code == 200
    during = [r for r in caplog.records if r.name.startswith(("workspaces", "providers",
                                                              "llmconn"))]
    assert any("trying fallback 'traced-up'" in r.getMessage() for r in during)
    assert {request_id_of(r) for r in during} == {request_id}


def _process(log_format: str, code: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, LOG_FORMAT=log_format, DJANGO_SETTINGS_MODULE="llmconn.settings",
               DEBUG="false", SECRET_KEY="a-production-secret-key-0123456789abcdef",
               FERNET_KEYS="a-production-fernet-key", LOG_LEVEL="INFO")
    return subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          env=env, capture_output=True, text=True, timeout=120)


def test_log_format_json_prints_one_object_per_line_with_the_request_id():
    result = _process("json", (
        "import django, logging; django.setup()\n"
        "from llmconn.tracing import set_request_id\n"
        "set_request_id('req_from_env')\n"
        "logging.getLogger('llmconn.x').warning('hello %s', 'there')\n"))
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello there" and line["request_id"] == "req_from_env"
    assert line["logger"] == "llmconn.x" and line["level"] == "WARNING"


def test_an_unknown_log_format_stops_start_up_naming_the_variable():
    result = _process("xml", "import django; django.setup()")
    assert result.returncode != 0 and "LOG_FORMAT must be plain or json" in result.stderr
