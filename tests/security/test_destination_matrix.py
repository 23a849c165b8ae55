"""Destination binding, table-driven: for every provider of the catalog and every auth method
that holds a secret, every destination-defining value (the base URL's host, scheme and port,
each URL field, each endpoint-building field such as a region or project) is changed without
sending the secrets again through the API (PATCH), the admin change form and an unsaved test
naming the connection. Each must be refused (`credentials_required`) and leave the row as it
was; the same change with the secrets sent is accepted (so the refusal is the binding, not a
bad value)."""

from __future__ import annotations

import pytest
from django import forms
from django.test import Client

from connections import services
from connections.models import Connection, ConnectionTest
from providers.base import URL, all_providers
from tests.factories import sample_secret

pytestmark = pytest.mark.django_db

# A first and a second value for each destination field (valid for its pattern).
FIELD_VALUES = {
    "token_url": ("https://auth.example.com/oauth/token", "https://other.example.net/oauth/token"),
    "aws_region_name": ("us-east-1", "eu-west-1"),
    "location": ("us-central1", "europe-west4"),
    "project_id": ("project-one", "project-two"),
    "tenant_id": ("tenant-one.example.com", "tenant-two.example.com"),
}
# Non-secret fields that do not decide where secrets go (they travel with them). A new field
# must be put in one of the two tables: test_the_catalog_declares_exactly_these fails until.
NOT_DESTINATION = {"api_version", "organization", "client_id", "scope", "audience",
                   "aws_access_key_id",
                   "header_name"}
BASE = "https://llm.example.com/v1"
BASE_CHANGES = {
    "host": "https://other.example.net/v1",
    "scheme": "http://llm.example.com/v1",
    "port": "https://llm.example.com:8443/v1",
}


def _cases():
    for spec in all_providers():
        for method in spec.auth_methods:
            if not any(f.secret for f in method.fields):
                continue
            for what in BASE_CHANGES:
                yield pytest.param(spec.name, method.name, "base_url", what,
                                   id=f"{spec.name}-{method.name}-base_url-{what}")
            # From this file's table, not from the catalog's own declaration (which is what
            # is under test): dropping a field's `destination` flag must fail a case.
            for field in spec.all_fields(method.name):
                if field.secret or field.name not in FIELD_VALUES:
                    continue
                yield pytest.param(spec.name, method.name, field.name, "value",
                                   id=f"{spec.name}-{method.name}-{field.name}")


CASES = list(_cases())


def _setup(provider: str, auth_method: str):
    """A valid connection of this provider/method with every secret set; (conn, secrets)."""
    spec = next(p for p in all_providers() if p.name == provider)
    config, secrets = {}, {}
    for field in spec.all_fields(auth_method):
        if field.secret:
            secrets[field.name] = sample_secret(field.name)
        elif field.name in FIELD_VALUES:
            config[field.name] = FIELD_VALUES[field.name][0]
        elif field.required and not field.default:
            config[field.name] = "value-1"
    conn = services.connection_create(name=f"m-{provider}-{auth_method}", provider=provider,
                                      auth_method=auth_method, base_url=BASE, config=config,
                                      credentials=secrets)
    return conn, secrets


def _change(conn: Connection, field: str, what: str) -> tuple[str | None, dict]:
    """(new base_url, new config) for the case."""
    if field == "base_url":
        return BASE_CHANGES[what], dict(conn.config)
    return conn.base_url, {**conn.config, field: FIELD_VALUES[field][1]}


def admin_change(client: Client, conn: Connection, changes: dict):
    """POST the admin change form of `conn` as it is shown, with `changes` applied."""
    url = f"/admin/connections/connection/{conn.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if isinstance(field, forms.BooleanField):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value
    data.update(changes)
    return client.post(url, data)


def _unchanged(conn: Connection, secrets: dict) -> None:
    row = Connection.objects.get(pk=conn.pk)
    assert (row.base_url, row.config, row.secrets) == (conn.base_url, conn.config, secrets)


def test_every_provider_has_a_case_and_every_url_field_binds():
    covered = {p.values[0] for p in CASES}
    assert covered == {p.name for p in all_providers()}
    for spec in all_providers():
        for method in spec.auth_methods:
            for field in spec.all_fields(method.name):
                if field.kind == URL:
                    assert field.defines_destination and field.name in FIELD_VALUES


def test_the_catalog_declares_exactly_these_destination_fields():
    for spec in all_providers():
        for method in spec.auth_methods:
            declared = {f.name for f in spec.destination_fields(method.name)}
            fields = {f.name for f in spec.all_fields(method.name) if not f.secret}
            assert declared == fields & set(FIELD_VALUES), (spec.name, method.name)
            assert fields <= set(FIELD_VALUES) | NOT_DESTINATION, (spec.name, method.name)


@pytest.mark.parametrize("provider,auth_method,field,what", CASES)
def test_api_patch_refuses_a_destination_change_without_secrets(
        staff_client, provider, auth_method, field, what):
    conn, secrets = _setup(provider, auth_method)
    base_url, config = _change(conn, field, what)
    r = staff_client.patch(f"/api/v1/connections/{conn.pk}/",
                           {"base_url": base_url, "config": config}, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "credentials_required", r.content
    _unchanged(conn, secrets)
    r = staff_client.patch(f"/api/v1/connections/{conn.pk}/",
                           {"base_url": base_url, "config": config, "credentials": secrets},
                           format="json")
    assert r.status_code == 200, r.content


@pytest.mark.parametrize("provider,auth_method,field,what", CASES)
def test_admin_form_refuses_a_destination_change_without_secrets(
        staff_user, provider, auth_method, field, what):
    client = Client()
    client.force_login(staff_user)
    conn, secrets = _setup(provider, auth_method)
    base_url, config = _change(conn, field, what)
    changes = {"base_url": base_url, **{f"cfg__{k}": v for k, v in config.items()}}
    response = admin_change(client, conn, changes)
    assert response.status_code == 200  # the form again, not a redirect after saving
    assert "Send again:" in response.content.decode()
    _unchanged(conn, secrets)


@pytest.mark.parametrize("provider,auth_method,field,what", CASES)
def test_unsaved_test_naming_the_connection_refuses_a_destination_change(
        staff_client, provider, auth_method, field, what):
    conn, secrets = _setup(provider, auth_method)
    base_url, config = _change(conn, field, what)
    r = staff_client.post("/api/v1/connection-tests/", {
        "connection": str(conn.pk), "base_url": base_url, "config": config}, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "credentials_required", r.content
    assert not ConnectionTest.objects.exists()
