"""The egress guard refuses what could leak a stored key to an address an attacker chose."""

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from django.test import override_settings

from providers import egress
from providers.egress import EgressBlocked, check_url
from providers.transport import RedirectRefused, httpx_client

NO_PRIVATE = override_settings(LLMCONN_EGRESS_ALLOW=[])


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/",
    "http://2130706433/",  # decimal
    "http://0x7f000001/",  # hex
    "http://0177.0.0.1/",  # octal
    "http://127.1/",  # short form
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::1]/",
    "http://localhost./",  # trailing dot
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://169.254.10.10/",  # link-local
    "http://0.0.0.0/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
])
def test_internal_addresses_are_refused_by_default(url):
    with NO_PRIVATE, pytest.raises(EgressBlocked) as exc:
        check_url(url)
    assert "LLMCONN_EGRESS_ALLOW" in str(exc.value)


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://100.100.100.200/",
])
def test_cloud_metadata_is_refused_even_when_everything_is_allowed(url):
    with override_settings(LLMCONN_EGRESS_ALLOW=["0.0.0.0/0", "::/0", "metadata.google.internal"]):
        with pytest.raises(EgressBlocked):
            check_url(url)


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "ftp://example.com/",
    "dict://127.0.0.1:11211/", "http://user@127.0.0.1/", "http://user:pw@example.com/",
    "http:///nohost", "http://exa mple.com:99999/",
])
def test_non_http_schemes_credentials_in_urls_and_bad_urls_are_refused(url):
    with pytest.raises(EgressBlocked):
        check_url(url)


def test_allow_list_admits_loopback_by_network():
    with override_settings(LLMCONN_EGRESS_ALLOW=["127.0.0.0/8"]):
        assert check_url("http://127.0.0.1:8080/v1") == ["127.0.0.1"]


def test_allow_list_admits_a_named_host():
    with override_settings(LLMCONN_EGRESS_ALLOW=["localhost"]):
        assert "127.0.0.1" in check_url("http://localhost:11434/v1")


def test_every_resolved_address_is_checked(monkeypatch):
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["93.184.216.34", "10.0.0.7"])
    with NO_PRIVATE, pytest.raises(EgressBlocked):
        check_url("https://mixed.example/v1")


def test_public_address_is_allowed(monkeypatch):
    monkeypatch.setattr(egress, "resolve", lambda host, port: ["93.184.216.34"])
    with NO_PRIVATE:
        assert check_url("https://api.example.com/v1") == ["93.184.216.34"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/secret")
            self.end_headers()
            return
        body = self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def _get(url: str) -> httpx.Response:
    async def go():
        async with httpx_client(timeout=5) as client:
            return await client.get(url)

    return asyncio.run(go())


def test_guarded_client_connects_to_the_checked_address_keeping_the_host_name(
        local_server, monkeypatch):
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host == "upstream.test" else host, *a, **k))
    with override_settings(LLMCONN_EGRESS_ALLOW=["127.0.0.0/8"]):
        response = _get(f"http://upstream.test:{local_server}/")
    assert response.status_code == 200
    assert response.text == f"upstream.test:{local_server}"


def test_guarded_client_refuses_a_resolver_that_answers_public_then_private(
        local_server, monkeypatch):
    """DNS rebinding: the pre-check sees a public address, the connection would see loopback."""
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with NO_PRIVATE:
        assert check_url(f"http://rebind.test:{local_server}/") == ["93.184.216.34"]
        with pytest.raises(EgressBlocked):
            _get(f"http://rebind.test:{local_server}/")


def test_guarded_client_does_not_follow_redirects(local_server):
    with override_settings(LLMCONN_EGRESS_ALLOW=["127.0.0.0/8"]), \
            pytest.raises(RedirectRefused) as caught:
        _get(f"http://127.0.0.1:{local_server}/redirect")
    assert "HTTP 302" in str(caught.value) and "never followed" in str(caught.value)


def test_guarded_client_refuses_loopback_when_not_allowed(local_server):
    with NO_PRIVATE, pytest.raises(EgressBlocked):
        _get(f"http://127.0.0.1:{local_server}/")


def test_environment_proxy_is_ignored(local_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    with override_settings(LLMCONN_EGRESS_ALLOW=["127.0.0.0/8"]):
        assert _get(f"http://127.0.0.1:{local_server}/").status_code == 200
