"""Vertex AI takes a Google service account key and nothing else (contract: "Outbound calls").

litellm hands any Google credential JSON to google-auth, which acts on what the JSON names:
an `external_account` reads a local file or calls a URL and sends what it got to the JSON's
token URL; an `authorized_user` sends a refresh token there; a value that is a path on this
server is opened as a key file. So a connection's JSON is refused unless it is a service
account key whose token URL is Google's: when it is saved, and again before every call (for
rows stored before the rule). Google's token endpoint is checked against the egress policy
like the endpoint itself.

The token itself is fetched by google-auth inside litellm; its request goes through our
transport (providers.transport.google_auth_request): egress-checked at connect, a redirect
refused (nothing sent to its target). The tests below sign with a key made at run time and
fetch from the fake upstream's token URL, standing in for Google's.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from connections.diagnostics import connection_test_request, connection_test_run
from django.test import override_settings

from providers import forward
from providers.catalog import VertexAI
from providers.errors import ProviderError
from providers.params import litellm_kwargs
from tests.factories import VERTEX_KEY as KEY
from tests.factories import ConnectionFactory
from tests.upstream import JWT_BEARER

URL = "/api/v1/connections/"


def _create(client, credentials_json: str):
    return client.post(URL, {
        "name": "vertex", "provider": "vertex_ai", "auth_method": "service_account",
        "config": {"project_id": "proj-1234"},
        "credentials": {"service_account_json": credentials_json}}, format="json")


def _external_account(tmp_path, token_url: str) -> dict:
    stolen = tmp_path / "server-secret.txt"
    stolen.write_text("SERVER-FILE-CANARY")
    return {"type": "external_account", "audience": "//iam.googleapis.com/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": token_url, "credential_source": {"file": str(stolen)}}


@pytest.mark.django_db
def test_a_key_file_as_google_gives_it_is_accepted(staff_client):
    response = _create(staff_client, json.dumps(KEY, indent=2))  # newlines included
    assert response.status_code == 201, response.json()
    assert "TEST-ONLY-NOT-A-KEY" not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("value, says", [
    ("/etc/hostname", "JSON key file"),
    ("not json at all", "JSON key file"),
    (json.dumps(["a", "list"]), "JSON key file"),
    (json.dumps({"type": "authorized_user", "refresh_token": "r", "client_id": "c",
                 "client_secret": "s"}), "authorized_user"),
    (json.dumps({**KEY, "token_uri": "https://attacker.example/token"}),
     "https://attacker.example/token"),
    (json.dumps({k: v for k, v in KEY.items() if k != "private_key"}), "private_key"),
])
def test_anything_else_is_refused_with_what_to_fix(staff_client, value, says):
    response = _create(staff_client, value)
    assert response.status_code == 400
    messages = " ".join(response.json()["error"]["fields"]["credentials"])
    assert "service_account_json" in messages and says in messages


@pytest.mark.django_db
def test_workload_identity_json_is_refused_and_never_acts(staff_client, tmp_path, upstream):
    external = _external_account(tmp_path, upstream.url + "/token")
    response = _create(staff_client, json.dumps(external))
    assert response.status_code == 400
    assert "external_account" in " ".join(response.json()["error"]["fields"]["credentials"])

    # Stored before the rule existed: the test is refused before litellm (google-auth) sees it.
    conn = ConnectionFactory(provider="vertex_ai", auth_method="service_account",
                             base_url=upstream.openai_url, default_model="gemini-2.5-flash",
                             config={"project_id": "proj-1234", "location": "us-central1"},
                             secrets={"service_account_json": json.dumps(external)},
                             secret_hints={})
    test = connection_test_run(test_id=connection_test_request(connection=conn).pk)
    assert (test.status, test.error_class) == ("failed", "blocked")
    assert "external_account" in test.message and "SERVER-FILE-CANARY" not in test.message
    assert upstream.requests == []  # neither the token URL nor the endpoint was called


def test_the_call_refuses_a_stored_json_that_is_not_a_service_account_key(tmp_path):
    with pytest.raises(ProviderError) as refused:
        litellm_kwargs(provider="vertex_ai", auth_method="service_account", base_url=None,
                       config={"project_id": "proj-1234"}, model="gemini-2.5-flash",
                       secrets={"service_account_json": "/etc/hostname"})
    assert refused.value.error_class == "blocked"
    kwargs = litellm_kwargs(provider="vertex_ai", auth_method="service_account",
                            base_url=None, config={"project_id": "proj-1234"},
                            model="gemini-2.5-flash",
                            secrets={"service_account_json": json.dumps(KEY)})
    assert json.loads(kwargs["vertex_credentials"]) == KEY


def test_googles_token_endpoint_is_checked_against_the_egress_policy(monkeypatch):
    checked = []

    async def check(url):
        checked.append(url)

    monkeypatch.setattr(forward, "check_egress", check)
    asyncio.run(forward.check_litellm_egress("https://us-central1-aiplatform.googleapis.com",
                                             "vertex_ai/gemini-2.5-flash"))
    assert checked == ["https://us-central1-aiplatform.googleapis.com", VertexAI.TOKEN_URI]
    checked.clear()
    asyncio.run(forward.check_litellm_egress("https://api.anthropic.com", "anthropic/claude"))
    assert checked == ["https://api.anthropic.com"]


# --- the token fetch itself (google-auth inside litellm, through our transport) ------------

MODEL = "gemini-2.5-flash"


def _service_account(token_url: str) -> dict:
    """A service account key signed by a throwaway RSA key (made here; none is committed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {**KEY, "private_key": pem, "token_uri": token_url}


@pytest.fixture
def google(upstream_factory, monkeypatch):
    """(upstream serving Vertex and the token URL, a redirect target, the key): the token URL
    stands in for Google's, so the save/call rule accepts it."""
    pytest.importorskip("google.auth")  # (litellm's Vertex path needs it: requirements.txt)
    up = upstream_factory(name="vertex", api_keys={"no-such-key"}, models=[MODEL])
    target = upstream_factory(name="target", api_keys=set())
    up.redirect_to = target.url
    monkeypatch.setattr(VertexAI, "TOKEN_URI", up.token_url)
    monkeypatch.setattr(VertexAI, "token_urls", (up.token_url,))
    return up, target, _service_account(up.token_url)


def _vertex_call(up, key):
    return litellm_kwargs(provider="vertex_ai", auth_method="service_account",
                          base_url=up.url, config={"project_id": "proj-1234",
                                                   "location": "us-central1"},
                          model=MODEL, secrets={"service_account_json": json.dumps(key)})


def _jwt_grants(up):
    return [r for r in up.requests_to("/oauth/token")
            if isinstance(r.body, dict) and r.body.get("grant_type") == JWT_BEARER]


@pytest.mark.django_db
def test_the_token_is_fetched_through_the_transport_and_the_call_succeeds(google):
    up, target, key = google
    conn = ConnectionFactory(provider="vertex_ai", auth_method="service_account",
                             base_url=up.url, default_model=MODEL,
                             config={"project_id": "proj-1234", "location": "us-central1"},
                             secrets={"service_account_json": json.dumps(key)}, secret_hints={})
    test = connection_test_run(test_id=connection_test_request(connection=conn).pk)
    assert test.status == "succeeded", test.message
    assert len(_jwt_grants(up)) == 1 and up.tokens_issued == 1
    calls = up.requests_to("/v1/projects/proj-1234/locations/us-central1/publishers/google/")
    assert calls and calls[-1].key.startswith("tok-")  # the fetched token, as Bearer

    answer = asyncio.run(forward.chat(call=_vertex_call(up, key), label="t", params={
        "messages": [{"role": "user", "content": "hello"}]}))
    assert answer["choices"][0]["message"]["content"]

    async def stream():  # another key: litellm keeps a token per key, so a new fetch
        chunks = await forward.chat_stream(
            call=_vertex_call(up, _service_account(up.token_url)), label="t",
            params={"messages": [{"role": "user", "content": "hello"}]})
        return [c async for c in chunks]

    assert asyncio.run(stream())
    assert len(_jwt_grants(up)) == 2 and target.request_count == 0


@pytest.mark.django_db
def test_a_redirect_from_the_token_url_fails_the_call_and_its_target_gets_nothing(google):
    up, target, key = google
    up.set_mode("redirect", status=307, path="/oauth/token")
    with pytest.raises(ProviderError) as caught:
        asyncio.run(forward.chat(call=_vertex_call(up, key), label="t", params={
            "messages": [{"role": "user", "content": "hello"}]}))
    assert caught.value.error_class == "blocked", caught.value.message
    assert "HTTP 307" in caught.value.message and target.url in caught.value.message
    assert len(_jwt_grants(up)) == 1  # asked once, through our transport
    assert target.request_count == 0
    assert up.requests_to("/v1/") == []  # no call without a token


def test_the_token_fetch_is_refused_by_the_egress_policy(google):
    from google.auth.exceptions import TransportError
    from google.oauth2 import service_account
    from litellm.llms.vertex_ai.vertex_llm_base import VertexBase

    up, _, key = google
    forward._litellm()  # (installs our transport into litellm)
    credentials = service_account.Credentials.from_service_account_info(
        key, scopes=["https://www.googleapis.com/auth/cloud-platform"])
    with override_settings(LLMCONN_EGRESS_ALLOW=[]), pytest.raises(TransportError) as caught:
        VertexBase().refresh_auth(credentials)
    assert "127.0.0.1" in str(caught.value)
    assert up.request_count == 0
    VertexBase().refresh_auth(credentials)  # allowed (test settings: loopback): it works
    assert credentials.token and len(_jwt_grants(up)) == 1


@pytest.mark.django_db
def test_the_token_fetch_over_https_trusts_only_the_system_roots_and_the_connections_ca(
        upstream_factory, monkeypatch):
    """A token URL and Vertex endpoint behind a private CA: refused without the connection's
    `ca_cert` (nothing reaches the token URL), accepted with it (google-auth's fetch uses it)."""
    import trustme

    pytest.importorskip("google.auth")
    up = upstream_factory(name="vertex-tls", api_keys={"no-such-key"}, models=[MODEL],
                          tls=trustme.CA())
    monkeypatch.setattr(VertexAI, "TOKEN_URI", up.token_url)
    monkeypatch.setattr(VertexAI, "token_urls", (up.token_url,))
    key = _service_account(up.token_url)
    params = {"messages": [{"role": "user", "content": "hello"}]}

    with pytest.raises(ProviderError) as caught:
        asyncio.run(forward.chat(call=_vertex_call(up, key), label="t", params=params))
    assert caught.value.error_class == "unreachable" and "certificate" in caught.value.message
    assert up.request_count == 0

    trusted = litellm_kwargs(provider="vertex_ai", auth_method="service_account",
                             base_url=up.url, model=MODEL,
                             config={"project_id": "proj-1234", "location": "us-central1",
                                     "ca_cert": up.ca_pem},
                             secrets={"service_account_json": json.dumps(key)})
    answer = asyncio.run(forward.chat(call=trusted, label="t", params=params))
    assert answer["choices"][0]["message"]["content"]
    assert len(_jwt_grants(up)) == 1
