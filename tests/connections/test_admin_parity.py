"""Admin parity (issue 18) with the Django test client: a test run in the add form becomes the
saved connection's status, changing the provider, removing an optional secret, staged rotation
and rollback, the index order. The same flows in Chromium are in tests/browser/."""

from __future__ import annotations

import pytest
from django.test import Client

from connections import diagnostics
from connections.models import Connection, ConnectionTest
from connections.services import connection_create
from tests.conftest import UPSTREAM_KEY

pytestmark = pytest.mark.django_db

ADD = "/admin/connections/connection/add/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def change_url(connection) -> str:
    return f"/admin/connections/connection/{connection.pk}/change/"


def unsaved_test(staff_user, upstream, key=UPSTREAM_KEY, **extra):
    """A finished test of unsaved settings, as the add form's "Test connection" runs it."""
    test = diagnostics.connection_test_request_unsaved(
        provider="openai_compatible", auth_method="api_key", base_url=upstream.openai_url,
        config={}, credentials={"api_key": key}, model="test-model", actor=staff_user, **extra)
    diagnostics.connection_test_run(test_id=test.pk)
    return ConnectionTest.objects.get(pk=test.pk)


def add_form(upstream, test_id="", key=UPSTREAM_KEY, **overrides):
    data = {"name": "Tested", "auth_method": "api_key", "base_url": upstream.openai_url,
            "default_model": "test-model", "is_active": "on", "secret__api_key": key,
            "llmconn_test_id": str(test_id)}
    data.update(overrides)
    return data


def test_a_test_run_in_the_add_form_is_the_saved_connections_status(
        admin_client, staff_user, upstream):
    test = unsaved_test(staff_user, upstream)
    assert test.status == "succeeded"
    response = admin_client.post(f"{ADD}?provider=openai_compatible", add_form(upstream, test.pk))
    assert response.status_code == 302, response.content.decode()[:2000]
    conn = Connection.objects.get(name="Tested")
    assert conn.status == "ok" and conn.last_tested_at == test.finished_at
    test.refresh_from_db()
    assert test.connection_id == conn.pk  # listed among the connection's tests


def test_a_failed_add_form_test_is_kept_as_failed(admin_client, staff_user, upstream):
    test = unsaved_test(staff_user, upstream, key="sk-wrong-key-0123456789")
    response = admin_client.post(f"{ADD}?provider=openai_compatible",
                                 add_form(upstream, test.pk, key="sk-wrong-key-0123456789"))
    assert response.status_code == 302
    conn = Connection.objects.get(name="Tested")
    assert (conn.status, conn.last_error_class) == ("failed", "auth")


@pytest.mark.parametrize("change", [
    {"secret__api_key": "sk-another-key-0123456789"},  # another key than the one tested
    {"default_model": "test-model-large"},
    {"base_url": "http://localhost:1/v1"},
])
def test_a_test_of_other_settings_is_not_the_saved_status(admin_client, staff_user, upstream,
                                                          change):
    test = unsaved_test(staff_user, upstream)
    response = admin_client.post(f"{ADD}?provider=openai_compatible",
                                 add_form(upstream, test.pk, **change))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Connection.objects.get(name="Tested").status == "untested"


def test_someone_elses_test_is_not_adopted(admin_client, upstream, django_user_model):
    other = django_user_model.objects.create_user("other", is_staff=True)
    test = unsaved_test(other, upstream)
    admin_client.post(f"{ADD}?provider=openai_compatible", add_form(upstream, test.pk))
    assert Connection.objects.get(name="Tested").status == "untested"


def test_a_bad_test_id_is_ignored(admin_client, upstream):
    response = admin_client.post(f"{ADD}?provider=openai_compatible",
                                 add_form(upstream, "not-a-uuid"))
    assert response.status_code == 302
    assert Connection.objects.get(name="Tested").status == "untested"


# --- change provider, remove an optional secret, extra headers ---------------------------------

def test_changing_the_provider_needs_the_new_providers_secrets(admin_client, upstream):
    conn = connection_create(name="Mover", provider="openai_compatible", auth_method="api_key",
                             base_url=upstream.openai_url, credentials={"api_key": UPSTREAM_KEY})
    picker = admin_client.get(change_url(conn) + "?change_provider=1").content.decode()
    assert 'data-card="provider-vllm"' in picker and "provider-openai_compatible" not in picker
    url = change_url(conn) + "?provider=vllm"
    page = admin_client.get(url).content.decode()
    assert "Saved, ends in" not in page  # the old key is not offered for the new endpoint
    base = {"name": "Mover", "auth_method": "api_key", "base_url": upstream.openai_url,
            "default_model": "", "is_active": "on"}
    response = admin_client.post(url, base)
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    response = admin_client.post(url, {**base, "secret__api_key": UPSTREAM_KEY})
    assert response.status_code == 302, response.content.decode()[:2000]
    conn.refresh_from_db()
    assert (conn.provider, conn.auth_method, conn.secrets) == ("vllm", "api_key",
                                                               {"api_key": UPSTREAM_KEY})


def test_an_optional_secret_can_be_removed_and_a_required_one_cannot(admin_client):
    conn = connection_create(
        name="AWS", provider="bedrock", auth_method="aws_access_key",
        config={"aws_region_name": "eu-west-1", "aws_access_key_id": "AKIAEXAMPLE"},
        credentials={"aws_secret_access_key": "secret-access-0123456789",
                     "aws_session_token": "session-token-0123456789"})
    page = admin_client.get(change_url(conn)).content.decode()
    assert 'name="remove__aws_session_token"' in page
    assert 'name="remove__aws_secret_access_key"' not in page
    response = admin_client.post(change_url(conn), {
        "name": "AWS", "auth_method": "aws_access_key", "base_url": "", "default_model": "",
        "is_active": "on", "cfg__aws_region_name": "eu-west-1",
        "cfg__aws_access_key_id": "AKIAEXAMPLE", "remove__aws_session_token": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    conn.refresh_from_db()
    assert conn.secrets == {"aws_secret_access_key": "secret-access-0123456789"}


def test_extra_headers_must_be_a_json_object(admin_client, upstream):
    conn = connection_create(name="Hdr", provider="openai_compatible", auth_method="api_key",
                             base_url=upstream.openai_url, credentials={"api_key": UPSTREAM_KEY})
    response = admin_client.post(change_url(conn), {
        "name": "Hdr", "auth_method": "api_key", "base_url": upstream.openai_url,
        "default_model": "", "is_active": "on", "extra_headers": "[1, 2]"})
    assert response.status_code == 200
    assert "Enter a JSON object" in response.content.decode()


# --- staged rotation and rollback ---------------------------------------------------------------

def test_rotation_refuses_a_failing_key_then_promotes_a_working_one_and_rolls_back(
        admin_client, upstream):
    upstream.api_keys = {UPSTREAM_KEY, "sk-upstream-new-key-0002"}
    conn = connection_create(name="Rot", provider="openai_compatible", auth_method="api_key",
                             base_url=upstream.openai_url, default_model="test-model",
                             credentials={"api_key": UPSTREAM_KEY})
    page = admin_client.get(change_url(conn)).content.decode()
    assert 'name="rotate__api_key"' in page and "llmconn-rollback-button" not in page
    rotate = f"/admin/connections/connection/{conn.pk}/rotate-secret/"
    response = admin_client.post(rotate, {"rotate__api_key": "sk-wrong-rotated-0123456"},
                                 follow=True)
    text = response.content.decode()
    assert "New secret refused: the test failed (auth" in text
    conn.refresh_from_db()
    assert conn.secrets == {"api_key": UPSTREAM_KEY}
    response = admin_client.post(rotate, {"rotate__api_key": "sk-upstream-new-key-0002"},
                                 follow=True)
    assert "New secret tested OK" in response.content.decode()
    conn.refresh_from_db()
    assert conn.secrets == {"api_key": "sk-upstream-new-key-0002"}
    assert "llmconn-rollback-button" in response.content.decode()
    rollback = f"/admin/connections/connection/{conn.pk}/rollback-secret/"
    response = admin_client.post(rollback, follow=True)
    assert "Rolled back to the previous secret" in response.content.decode()
    conn.refresh_from_db()
    assert conn.secrets == {"api_key": UPSTREAM_KEY}
    response = admin_client.post(rollback, follow=True)
    assert "Not rolled back" in response.content.decode()
    assert admin_client.get(rotate).status_code == 403  # POST only


# --- the index ----------------------------------------------------------------------------------

def test_index_lists_connections_workspaces_usage_audit_first_and_groups_system(admin_client):
    apps = admin_client.get("/admin/").context["app_list"]
    names = [app["name"] for app in apps]
    assert names[:4] == ["Connections", "Workspaces", "Usage", "Audit"], names
    assert names[-1] == "System"
    system = {m["object_name"] for m in apps[-1]["models"]}
    assert {"PeriodicTask", "CrontabSchedule", "TokenProxy"} <= system
    usage = [m["object_name"] for m in apps[2]["models"]]
    assert usage == ["UsageReport", "Budget", "UsageRecord"]
    everything = [m["object_name"] for app in apps for m in app["models"]]
    assert len(everything) == len(set(everything))  # nothing listed twice
