"""Throttles on the shared cache: starting tests/discoveries per user, /v1 calls per workspace
API key. Past the limit: 429 with Retry-After, in the API's error shape or OpenAI's format, and
nothing reaches the provider. A cache outage lets requests through."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import override_settings

from llmconn.throttling import parse_rate
from tests.conftest import UPSTREAM_KEY
from tests.factories import ConnectionFactory

from .support import closed_port_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()  # counters of earlier tests (ids are reused) must not count here
    yield
    cache.clear()


def start_requests(conn):
    return {
        "test": (f"/api/v1/connections/{conn.pk}/test/", {}),
        "discover": (f"/api/v1/connections/{conn.pk}/discover-models/", None),
        "unsaved": ("/api/v1/connection-tests/", {"connection": str(conn.pk)}),
    }


@pytest.mark.parametrize("endpoint", ["test", "discover", "unsaved"])
def test_starting_tests_past_the_rate_is_a_429_with_retry_after_naming_the_setting(
        staff_client, upstream, settings, endpoint):
    settings.LLMCONN_THROTTLE_TESTS = "3/min"
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    path, body = start_requests(conn)[endpoint]
    for _ in range(3):
        assert staff_client.post(path, body, format="json").status_code == 202
    from connections.models import ConnectionTest

    rows = ConnectionTest.objects.count()
    r = staff_client.post(path, body, format="json")
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    error = r.json()["error"]
    assert error["code"] == "throttled"
    assert "LLMCONN_THROTTLE_TESTS=3/min" in error["message"]
    assert ConnectionTest.objects.count() == rows  # refused before anything was queued


def test_the_test_throttle_counts_per_user_and_all_start_endpoints_together(
        staff_client, staff_user, upstream, settings, django_user_model):
    from rest_framework.test import APIClient

    settings.LLMCONN_THROTTLE_TESTS = "2/min"
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    reqs = start_requests(conn)
    assert staff_client.post(*reqs["test"], format="json").status_code == 202
    assert staff_client.post(reqs["discover"][0]).status_code == 202
    assert staff_client.post(*reqs["unsaved"], format="json").status_code == 429
    other = APIClient()
    other.force_authenticate(django_user_model.objects.create_user(
        "staff2", password="pw-staff2-123", is_staff=True))
    assert other.post(*reqs["test"], format="json").status_code == 202  # another user
    # Reading results is not throttled.
    assert staff_client.get("/api/v1/connection-tests/").status_code == 200
    assert staff_client.get(f"/api/v1/connections/{conn.pk}/models/").status_code == 200


def test_no_test_throttle_when_the_rate_is_empty(staff_client, upstream, settings):
    settings.LLMCONN_THROTTLE_TESTS = ""
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    for _ in range(5):
        assert staff_client.post(f"/api/v1/connections/{conn.pk}/test/").status_code == 202


CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def test_gateway_calls_past_the_rate_of_a_key_are_429_in_openai_format_with_retry_after(
        upstream, make_connection, make_workspace, make_key, gateway, settings):
    settings.LLMCONN_THROTTLE_GATEWAY = "2/min"
    workspace = make_workspace("throttled", chat=make_connection(upstream),
                               embedding=make_connection(upstream))
    key, other_key = make_key(workspace, "a"), make_key(workspace, "b")
    assert gateway.post("/v1/chat/completions", key, CHAT).status_code == 200
    assert gateway.post("/v1/embeddings", key, {"model": "embedding",
                                                 "input": "x"}).status_code == 200
    calls = upstream.request_count
    r = gateway.post("/v1/chat/completions", key, CHAT)
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    assert r.json() == {"error": {
        "message": r.json()["error"]["message"], "type": "requests",
        "code": "rate_limit_exceeded", "param": None}}
    assert "LLMCONN_THROTTLE_GATEWAY=2/min" in r.json()["error"]["message"]
    assert upstream.request_count == calls  # nothing was sent upstream
    assert gateway.post("/v1/chat/completions", other_key, CHAT).status_code == 200  # per key


def test_invalid_gateway_keys_are_refused_before_they_count(upstream, make_connection,
                                                           make_workspace, make_key, gateway,
                                                           settings):
    settings.LLMCONN_THROTTLE_GATEWAY = "1/min"
    key = make_key(make_workspace("w", chat=make_connection(upstream)))
    for _ in range(3):
        assert gateway.post("/v1/chat/completions", "lck_" + "x" * 40, CHAT).status_code == 401
    assert gateway.post("/v1/chat/completions", key, CHAT).status_code == 200


@pytest.mark.parametrize("rate,parsed", [("30/min", (30, 60)), ("5/s", (5, 1)),
                                         ("100/hour", (100, 3600)), ("1/day", (1, 86400)),
                                         ("", None), (None, None)])
def test_rates_are_read_in_drf_notation(rate, parsed):
    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["30", "x/min", "30/fortnight", "-1/min"])
def test_a_malformed_rate_is_refused(rate):
    with pytest.raises(ValueError):
        parse_rate(rate)


def test_with_the_cache_down_throttles_let_requests_through(staff_client, upstream, settings,
                                                             make_connection, make_workspace,
                                                             make_key, gateway):
    settings.LLMCONN_THROTTLE_TESTS = "1/min"
    settings.LLMCONN_THROTTLE_GATEWAY = "1/min"
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    key = make_key(make_workspace("w", chat=make_connection(upstream)))
    down = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": closed_port_url("redis", "/0"),
                        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}}}
    with override_settings(CACHES=down):
        for _ in range(3):
            assert staff_client.post(f"/api/v1/connections/{conn.pk}/test/").status_code == 202
            assert gateway.post("/v1/chat/completions", key, CHAT).status_code == 200


def test_rotate_secret_calls_the_provider_so_it_counts_against_the_test_throttle(
        staff_client, upstream, settings):
    settings.LLMCONN_THROTTLE_TESTS = "1/min"
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    path = f"/api/v1/connections/{conn.pk}/rotate-secret/"
    first = staff_client.post(path, {"credentials": {"api_key": UPSTREAM_KEY + "-new"}},
                              format="json")
    assert first.status_code in (200, 400)  # tested (the new key is refused upstream), not throttled
    second = staff_client.post(path, {"credentials": {"api_key": UPSTREAM_KEY}}, format="json")
    assert second.status_code == 429
    assert "LLMCONN_THROTTLE_TESTS" in second.json()["error"]["message"]
