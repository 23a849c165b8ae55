"""The egress guard on every outbound path, end to end: a connection test started through the
API, model discovery, an OAuth token fetch and a /v1 call all refuse internal, metadata and
oddly written addresses (nothing reaches the listening upstream), a resolver that answers
public then private is caught at connect time, and redirects are not followed.
The guard's own unit tests (every encoding, the transport) are in tests/providers/test_egress.py.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from connections.models import ConnectionTest
from providers.checks import ConnectionSettings, test_connection
from tests.conftest import UPSTREAM_KEY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db

HOSTILE = [
    "http://127.0.0.1:{port}/v1",
    "http://2130706433:{port}/v1",  # decimal
    "http://0x7f000001:{port}/v1",  # hex
    "http://0177.0.0.1:{port}/v1",  # octal
    "http://127.1:{port}/v1",  # short form
    "http://[::ffff:127.0.0.1]:{port}/v1",  # IPv4-mapped IPv6
    "http://[::1]:{port}/v1",
    "http://localhost.:{port}/v1",  # trailing dot
    "http://169.254.169.254/latest/meta-data",
    "http://metadata.google.internal/v1",
    "http://[fd00:ec2::254]/v1",
    "http://user@127.0.0.1:{port}/v1",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_",
]


@pytest.fixture
def no_private(settings):
    settings.LLMCONN_EGRESS_ALLOW = []


@pytest.mark.parametrize("template", HOSTILE)
def test_a_test_of_a_hostile_base_url_is_refused_before_any_byte_is_sent(
        staff_client, upstream, no_private, template, django_capture_on_commit_callbacks):
    url = template.format(port=upstream.port)
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", {
            "provider": "openai_compatible", "auth_method": "api_key", "base_url": url,
            "default_model": "test-model", "credentials": {"api_key": UPSTREAM_KEY}},
            format="json")
    if r.status_code == 400:  # refused by validation (scheme, credentials in the URL)
        assert r.json()["error"]["fields"]
    else:
        assert r.status_code == 202, r.content
        test = ConnectionTest.objects.get(pk=r.json()["id"])
        assert (test.status, test.error_class) == ("failed", "blocked"), test.message
        assert "LLMCONN_EGRESS_ALLOW" in test.message or "metadata" in test.message
    assert upstream.request_count == 0


def test_discovery_oauth_and_gateway_calls_are_refused_when_loopback_is_not_allowed(
        staff_client, upstream, make_connection, make_workspace, make_key, gateway, settings,
        django_capture_on_commit_callbacks):
    api = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    oauth = ConnectionFactory(auth_method="oauth_client_credentials",
                              base_url="https://api.example.com/v1",
                              config={"token_url": upstream.token_url, "client_id": "test-client"},
                              secrets={"client_secret": "test-client-secret-0001"})
    key = make_key(make_workspace("w", chat=make_connection(upstream)))
    settings.LLMCONN_EGRESS_ALLOW = []
    with django_capture_on_commit_callbacks(execute=True):
        discovery = staff_client.post(f"/api/v1/connections/{api.pk}/discover-models/").json()
        token_test = staff_client.post(f"/api/v1/connections/{oauth.pk}/test/").json()
    assert ConnectionTest.objects.get(pk=discovery["id"]).error_class == "blocked"
    assert ConnectionTest.objects.get(pk=token_test["id"]).error_class == "blocked"
    r = gateway.post("/v1/chat/completions", key,
                     {"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502 and r.json()["error"]["code"] == "provider_blocked"
    assert upstream.request_count == 0


def test_a_resolver_that_answers_public_then_private_is_caught_at_connect_time(
        upstream, no_private, monkeypatch):
    """DNS rebinding against the connection test: check_url sees a public address, the
    connection would go to loopback. The guarded client resolves and checks again."""
    answers = iter(["93.184.216.34"] + ["127.0.0.1"] * 10)
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    outcome = test_connection(ConnectionSettings(
        provider="openai_compatible", auth_method="api_key",
        base_url=f"http://rebind.test:{upstream.port}/v1", config={},
        secrets={"api_key": UPSTREAM_KEY}, model="test-model"), timeout=5)
    assert (outcome.ok, outcome.error_class) == (False, "blocked"), outcome.message
    assert upstream.request_count == 0


class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def _go(self):
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _go

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("target", ["{upstream}/v1/chat/completions",
                                    "http://169.254.169.254/latest/meta-data/"])
def test_a_redirect_is_not_followed_by_a_connection_test(upstream, target):
    handler = type("Redirect", (_Redirect,), {"target": target.format(upstream=upstream.url)})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        outcome = test_connection(ConnectionSettings(
            provider="openai_compatible", auth_method="api_key",
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", config={},
            secrets={"api_key": UPSTREAM_KEY}, model="test-model"), timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert (outcome.ok, outcome.error_class) == (False, "blocked")  # contract: 3xx = blocked
    assert "redirect" in outcome.message
    assert upstream.request_count == 0
