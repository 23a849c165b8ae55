"""Secrets go only where they were entered (issue #16): one regression test per finding of the
adversarial pass, each failing on the code before destination binding, masks and save-time
URL/header validation. The table-driven walk of every catalog field is
test_destination_matrix.py."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from connections import services
from connections.models import Connection, ConnectionTest
from connections.secret_rotation import SecretTestResult, connection_rotate_secret
from tests.conftest import UPSTREAM_KEY

pytestmark = pytest.mark.django_db

CLIENT_SECRET = "test-client-secret-0001"
KEY = "sk-stored-key-for-tests-WXYZ"


def detail(conn) -> str:
    return f"/api/v1/connections/{conn.pk}/"


def error_code(response) -> str:
    return response.json()["error"]["code"]


@pytest.fixture
def oauth_conn(upstream):
    return services.connection_create(
        name="oauth", provider="openai_compatible", auth_method="oauth_client_credentials",
        base_url=upstream.openai_url,
        config={"token_url": upstream.token_url, "client_id": "test-client"},
        credentials={"client_secret": CLIENT_SECRET})


@pytest.fixture
def key_conn():
    return services.connection_create(name="keyed", provider="openai_compatible",
                                      auth_method="api_key", base_url="https://llm.example.com/v1",
                                      credentials={"api_key": KEY})


# --- High: a stored secret follows a changed token_url -----------------------------------------

def test_patching_token_url_without_the_client_secret_is_refused(staff_client, oauth_conn,
                                                                 upstream_factory):
    other = upstream_factory(name="attacker")
    r = staff_client.patch(detail(oauth_conn), {"config": {
        "token_url": other.token_url, "client_id": "test-client"}}, format="json")
    assert r.status_code == 400 and error_code(r) == "credentials_required"
    assert Connection.objects.get(pk=oauth_conn.pk).config["token_url"] != other.token_url
    assert other.requests == []


def test_unsaved_test_naming_the_connection_cannot_move_its_client_secret(
        staff_client, oauth_conn, upstream_factory):
    other = upstream_factory(name="attacker")
    r = staff_client.post("/api/v1/connection-tests/", {
        "connection": str(oauth_conn.pk),
        "config": {"token_url": other.token_url, "client_id": "test-client"}}, format="json")
    assert r.status_code == 400 and error_code(r) == "credentials_required"
    assert not ConnectionTest.objects.exists() and other.requests == []


def test_admin_form_cannot_move_the_client_secret_to_another_token_url(staff_user, oauth_conn):
    from tests.security.test_destination_matrix import admin_change

    client = Client()
    client.force_login(staff_user)
    response = admin_change(client, oauth_conn,
                            {"cfg__token_url": "https://attacker.example/token"})
    assert response.status_code == 200  # the form again, with the refusal on it
    assert "Send again: client_secret." in response.content.decode()
    assert Connection.objects.get(pk=oauth_conn.pk).config == oauth_conn.config


@pytest.mark.parametrize("region", ["attacker.example/x#", "evil.example", "us-east-1.evil",
                                    "us east 1", "us-east-1\r\n"])
def test_bedrock_region_is_a_plain_token_and_binds_the_key(staff_client, region):
    conn = services.connection_create(
        name="bedrock", provider="bedrock", auth_method="api_key",
        config={"aws_region_name": "us-east-1"}, credentials={"api_key": KEY})
    without = staff_client.patch(detail(conn), {"config": {"aws_region_name": region}},
                                 format="json")
    assert without.status_code == 400
    with_key = staff_client.patch(detail(conn), {"config": {"aws_region_name": region},
                                                 "credentials": {"api_key": KEY}}, format="json")
    assert with_key.status_code == 400 and "aws_region_name" in with_key.json()["error"]["message"]
    assert Connection.objects.get(pk=conn.pk).config == {"aws_region_name": "us-east-1"}


def test_bedrock_region_change_without_the_key_is_credentials_required(staff_client):
    conn = services.connection_create(
        name="bedrock", provider="bedrock", auth_method="api_key", credentials={"api_key": KEY})
    r = staff_client.patch(detail(conn), {"config": {"aws_region_name": "eu-west-1"}},
                           format="json")
    assert r.status_code == 400 and error_code(r) == "credentials_required"


# --- https -> http on the same host (implicit 443 -> 80) ---------------------------------------

@pytest.mark.parametrize("new_url", ["http://llm.example.com/v1",
                                     "https://llm.example.com:8443/v1",
                                     "http://llm.example.com:443/v1"])
def test_scheme_or_port_change_on_the_same_host_needs_the_key(staff_client, key_conn, new_url):
    r = staff_client.patch(detail(key_conn), {"base_url": new_url}, format="json")
    assert r.status_code == 400 and error_code(r) == "credentials_required"
    assert Connection.objects.get(pk=key_conn.pk).base_url == "https://llm.example.com/v1"


@pytest.mark.parametrize("same", ["https://llm.example.com:443/v2", "https://LLM.example.com/v1",
                                  "https://llm.example.com./other"])
def test_same_scheme_host_and_port_keeps_the_key(staff_client, key_conn, same):
    r = staff_client.patch(detail(key_conn), {"base_url": same}, format="json")
    assert r.status_code == 200, r.content
    assert Connection.objects.get(pk=key_conn.pk).secrets == {"api_key": KEY}


# --- rollback-secret after the base URL moved ----------------------------------------------------

def test_rollback_after_the_destination_moved_does_not_put_the_old_key_on_the_new_host(
        staff_client, upstream):
    conn = services.connection_create(name="rot", provider="openai_compatible",
                                      auth_method="api_key", base_url=upstream.openai_url,
                                      credentials={"api_key": UPSTREAM_KEY})
    connection_rotate_secret(connection=conn, credentials={"api_key": "sk-rotated-key-00000002"},
                             tester=lambda probe: SecretTestResult(ok=True))
    # Moved with a new key sent (allowed): the previous key belongs to the old host.
    services.connection_update(connection=conn, base_url="https://elsewhere.example/v1",
                               credentials={"api_key": "sk-new-host-key-00000003"})
    r = staff_client.post(f"/api/v1/connections/{conn.pk}/rollback-secret/")
    assert r.status_code == 400 and error_code(r) == "credentials_required"
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": "sk-new-host-key-00000003"}


def test_rollback_on_the_same_destination_still_works(staff_client, upstream):
    conn = services.connection_create(name="rot", provider="openai_compatible",
                                      auth_method="api_key", base_url=upstream.openai_url,
                                      credentials={"api_key": UPSTREAM_KEY})
    connection_rotate_secret(connection=conn, credentials={"api_key": "sk-rotated-key-00000002"},
                             tester=lambda probe: SecretTestResult(ok=True))
    services.connection_update(connection=conn, default_model="other")  # not a move
    r = staff_client.post(f"/api/v1/connections/{conn.pk}/rollback-secret/")
    assert r.status_code == 200, r.content
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": UPSTREAM_KEY}


def test_previous_secret_without_a_recorded_destination_is_not_rolled_back(staff_client):
    conn = services.connection_create(name="legacy", provider="openai",
                                      credentials={"api_key": KEY})
    # A row rotated before destinations were recorded.
    Connection.objects.filter(pk=conn.pk).update(
        previous_secrets_expires_at=timezone.now() + dt.timedelta(hours=1))
    row = Connection.objects.get(pk=conn.pk)
    row.previous_secrets = {"api_key": "sk-legacy-previous-key-0001"}
    row.save(update_fields=["previous_secrets", "previous_secrets_key_id"])
    r = staff_client.post(f"/api/v1/connections/{conn.pk}/rollback-secret/")
    assert r.status_code == 400 and error_code(r) == "credentials_required"


# --- rows whose secrets cannot be decrypted ------------------------------------------------------

def _unreadable(**kwargs) -> Connection:
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        return services.connection_create(name="orphan", provider="openai_compatible",
                                          auth_method="api_key",
                                          base_url="https://llm.example.com/v1",
                                          credentials={"api_key": KEY}, **kwargs)


def test_unreadable_row_cannot_be_moved_to_another_host(staff_client):
    conn = _unreadable()
    r = staff_client.patch(detail(conn), {"base_url": "https://attacker.example/v1"},
                           format="json")
    assert r.status_code == 400 and error_code(r) == "credentials_required"
    # Once the old key is configured again, the secret is still bound to the old host.
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        row = Connection.objects.get(pk=conn.pk)
        assert row.base_url == "https://llm.example.com/v1" and row.secrets == {"api_key": KEY}


def test_unreadable_row_moves_when_its_secrets_are_entered_again(staff_client):
    conn = _unreadable()
    r = staff_client.patch(detail(conn), {"base_url": "https://new.example/v1",
                                          "credentials": {"api_key": "sk-entered-again-0000"}},
                           format="json")
    assert r.status_code == 200, r.content
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": "sk-entered-again-0000"}


def test_editing_another_field_of_an_unreadable_row_keeps_its_hints(staff_client):
    conn = _unreadable()
    r = staff_client.patch(detail(conn), {"default_model": "other-model"}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["credentials"] == {"api_key": {"set": True, "hint": "", "readable": False}}
    assert Connection.objects.get(pk=conn.pk).secret_hints == {"api_key": "WXYZ"}


# --- masks stored as the key ---------------------------------------------------------------

MASKS = ["sk-...WXYZ", "sk-proj-...WXYZ", "sk-proj-****WXYZ", "*WXYZ", "[REDACTED]",
         "∙∙∙∙WXYZ", "＊＊＊＊WXYZ", "⋯WXYZ", "<redacted>", "●●●●●●●●"]


@pytest.mark.parametrize("masked", MASKS)
def test_masked_values_are_refused_by_the_api_and_the_key_is_kept(staff_client, key_conn, masked):
    r = staff_client.patch(detail(key_conn), {"credentials": {"api_key": masked}}, format="json")
    assert r.status_code == 400 and error_code(r) == "masked_secret"
    assert Connection.objects.get(pk=key_conn.pk).secrets == {"api_key": KEY}


@pytest.mark.parametrize("masked", MASKS)
def test_masked_values_are_refused_by_the_admin_form(staff_user, key_conn, masked):
    from tests.security.test_destination_matrix import admin_change

    client = Client()
    client.force_login(staff_user)
    response = admin_change(client, key_conn, {"secret__api_key": masked})
    assert response.status_code == 200
    assert "Looks masked; nothing was stored." in response.content.decode()
    assert Connection.objects.get(pk=key_conn.pk).secrets == {"api_key": KEY}


@pytest.mark.parametrize("masked", ["sk-...WXYZ", "[REDACTED]", "∙∙∙∙"])
def test_masked_values_are_refused_on_create_and_rotation(staff_client, key_conn, masked):
    r = staff_client.post("/api/v1/connections/", {
        "name": "new", "provider": "openai", "credentials": {"api_key": masked}}, format="json")
    assert r.status_code == 400 and error_code(r) == "masked_secret"
    r = staff_client.post(f"/api/v1/connections/{key_conn.pk}/rotate-secret/",
                          {"credentials": {"api_key": masked}}, format="json")
    assert r.status_code == 400 and error_code(r) == "masked_secret"


@pytest.mark.parametrize("real", ["sk-proj-abcDEF123_ghiJKL456-mnoPQR789",
                                  "gsk_0123456789abcdefXYZ", "AKIAIOSFODNN7EXAMPLE",
                                  "a*b-not-a-mask-0000"])
def test_real_looking_keys_are_not_taken_for_masks(staff_client, key_conn, real):
    r = staff_client.patch(detail(key_conn), {"credentials": {"api_key": real}}, format="json")
    assert r.status_code == 200, r.content


# --- URLs and headers validated at save time -----------------------------------------------------

@pytest.mark.parametrize("bad", ["https://llm.example.com/v1\r\nX-Injected: 1",
                                 "https://llm.example.com/v1\n/x", "https://llm.example.com/\tv1",
                                 "https://llm.example.com/v 1", "https://llm.example.com\x00/v1",
                                 "https://llm.example.com/\u2028v1"])
def test_base_url_with_control_characters_or_spaces_is_a_400_naming_it(staff_client, bad):
    r = staff_client.post("/api/v1/connections/", {
        "name": "bad", "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": bad,
        "credentials": {"api_key": KEY}}, format="json")
    assert r.status_code == 400 and "base_url" in r.json()["error"]["fields"]
    assert not Connection.objects.filter(name="bad").exists()


def test_token_url_with_a_newline_is_a_400_naming_config(staff_client):
    r = staff_client.post("/api/v1/connections/", {
        "name": "bad", "provider": "openai_compatible", "auth_method": "oauth_client_credentials",
        "base_url": "https://llm.example.com/v1", "credentials": {"client_secret": KEY},
        "config": {"token_url": "https://auth.example.com/token\r\n", "client_id": "c"}},
        format="json")
    assert r.status_code == 400 and "token_url" in str(r.json()["error"]["fields"]["config"])


@pytest.mark.parametrize("name", ["X-Team\r\nX-Other: 1", "X Team", "X-Team:", "X-Tëam"])
def test_custom_header_name_must_be_a_token(staff_client, name):
    r = staff_client.post("/api/v1/connections/", {
        "name": "hdr", "provider": "vllm", "auth_method": "custom_header",
        "config": {"header_name": name}, "credentials": {"header_value": "Bearer abcdefghijkl"}},
        format="json")
    assert r.status_code == 400, r.content
    assert not Connection.objects.filter(name="hdr").exists()


@pytest.mark.parametrize("value", ["Bearer abc\r\nX-Injected: 1", "Bearer abc\n", "abc\x00def"])
def test_custom_header_value_without_cr_lf_nul(staff_client, value):
    r = staff_client.post("/api/v1/connections/", {
        "name": "hdr", "provider": "vllm", "auth_method": "custom_header",
        "config": {"header_name": "X-Team-Key"}, "credentials": {"header_value": value}},
        format="json")
    assert r.status_code == 400 and "credentials" in r.json()["error"]["fields"]


@pytest.mark.parametrize("headers,ok", [
    ({"X-Team": "blue"}, True),
    ({"Authorization": "Bearer x"}, False),
    ({"host": "evil.example"}, False),
    ({"Content-Length": "1"}, False),
    ({"Transfer-Encoding": "chunked"}, False),
    ({"Connection": "close"}, False),
    ({"Cookie": "a=b"}, False),
    ({"X-Bad Name": "v"}, False),
    ({"X-Team": "a\r\nX-Injected: 1"}, False),
    ({"X-Team": "a\x00"}, False),
])
def test_extra_headers_are_checked_at_save_time(staff_client, headers, ok):
    r = staff_client.post("/api/v1/connections/", {
        "name": "xh", "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": "https://llm.example.com/v1",
        "config": {"extra_headers": headers}, "credentials": {"api_key": KEY}}, format="json")
    assert (r.status_code == 201) is ok, r.content
    if not ok:
        assert "config" in r.json()["error"]["fields"]


@pytest.mark.parametrize("provider,auth,header", [
    ("anthropic", "api_key", "x-api-key"), ("azure_openai", "api_key", "api-key"),
    ("gemini", "api_key", "X-Goog-Api-Key"), ("litellm_proxy", "api_key", "x-litellm-api-key"),
])
def test_extra_headers_may_not_set_the_auth_methods_own_header(staff_client, provider, auth,
                                                               header):
    body = {"name": "xh", "provider": provider, "auth_method": auth,
            "config": {"extra_headers": {header: "v"}}, "credentials": {"api_key": KEY}}
    if provider in ("azure_openai", "litellm_proxy"):
        body["base_url"] = "https://llm.example.com"
    r = staff_client.post("/api/v1/connections/", body, format="json")
    assert r.status_code == 400 and "config" in r.json()["error"]["fields"], r.content


def test_extra_headers_may_not_repeat_the_custom_header(staff_client):
    r = staff_client.post("/api/v1/connections/", {
        "name": "xh", "provider": "vllm", "auth_method": "custom_header",
        "config": {"header_name": "X-Team-Key", "extra_headers": {"x-team-key": "v"}},
        "credentials": {"header_value": "abcdefghijklmnop"}}, format="json")
    assert r.status_code == 400 and "config" in r.json()["error"]["fields"]


def test_refused_header_rule_is_importable_from_providers():
    from providers.base import get_provider
    from providers.headers import refused_extra_headers

    names = refused_extra_headers(get_provider("anthropic"), "api_key", {})
    assert {"authorization", "host", "content-length", "transfer-encoding", "connection",
            "cookie", "x-api-key"} <= names
