"""The tests/discovery API in eager mode: 202, polling, error classes, unsaved settings reusing
stored secrets, model listings, permissions. (The same flows through a real worker on Redis are
in test_tasks_worker.py.)"""

from __future__ import annotations

import pytest
from django.test import override_settings

from connections.models import Connection, ConnectionTest
from tests.conftest import CANARY, UPSTREAM_KEY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def conn(upstream):
    return ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY},
                             secret_hints={"api_key": UPSTREAM_KEY[-4:]})


def start_test(client, conn, capture, **body):
    with capture(execute=True):
        r = client.post(f"/api/v1/connections/{conn.pk}/test/", body, format="json")
    return r


def test_testing_a_saved_connection_answers_202_then_succeeds(
        staff_client, conn, upstream, django_capture_on_commit_callbacks):
    r = start_test(staff_client, conn, django_capture_on_commit_callbacks)
    assert r.status_code == 202
    assert r.json()["status"] == "pending" and r.json()["kind"] == "test"
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert poll["status"] == "succeeded", poll
    assert poll["error_class"] is None
    assert poll["latency_ms"] is not None and poll["model"] == "test-model"
    assert poll["started_at"] and poll["finished_at"]
    conn.refresh_from_db()
    assert conn.status == "ok" and conn.last_tested_at is not None
    assert upstream.last_request.key == UPSTREAM_KEY


@pytest.mark.parametrize("mode,error_class", [
    (401, "auth"), (429, "rate_limited"), (500, "provider_error"), ("bad_json", "provider_error"),
    ("not_found", "model_not_found"),
])
def test_failed_test_records_error_class_and_connection_status(
        staff_client, conn, upstream, django_capture_on_commit_callbacks, mode, error_class):
    upstream.set_mode(mode)
    r = start_test(staff_client, conn, django_capture_on_commit_callbacks)
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert (poll["status"], poll["error_class"]) == ("failed", error_class)
    conn.refresh_from_db()
    assert conn.status == "failed" and conn.last_error_class == error_class


def test_echoed_key_never_reaches_the_stored_message(
        staff_client, upstream, django_capture_on_commit_callbacks, caplog):
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": CANARY})
    upstream.set_mode("echo_key")
    r = start_test(staff_client, conn, django_capture_on_commit_callbacks)
    test = ConnectionTest.objects.get(pk=r.json()["id"])
    assert test.error_class == "auth"
    assert CANARY not in test.message
    assert CANARY not in staff_client.get(f"/api/v1/connection-tests/{test.pk}/").content.decode()
    assert CANARY not in caplog.text


def test_unreachable_and_blocked(staff_client, closed_port_url, django_capture_on_commit_callbacks,
                                 settings, upstream):
    down = ConnectionFactory(base_url=closed_port_url)
    r = start_test(staff_client, down, django_capture_on_commit_callbacks)
    assert ConnectionTest.objects.get(pk=r.json()["id"]).error_class == "unreachable"
    settings.LLMCONN_EGRESS_ALLOW = []
    blocked = ConnectionFactory(base_url=upstream.openai_url)
    r = start_test(staff_client, blocked, django_capture_on_commit_callbacks)
    test = ConnectionTest.objects.get(pk=r.json()["id"])
    assert test.error_class == "blocked" and "LLMCONN_EGRESS_ALLOW" in test.message
    assert upstream.request_count == 0


def test_a_test_of_another_model_can_be_asked_for(
        staff_client, conn, upstream, django_capture_on_commit_callbacks):
    r = start_test(staff_client, conn, django_capture_on_commit_callbacks, model="test-model-large")
    assert ConnectionTest.objects.get(pk=r.json()["id"]).model == "test-model-large"
    assert upstream.last_request.body["model"] == "test-model-large"


def test_unsaved_settings_are_tested_and_the_secret_is_emptied_after(
        staff_client, upstream, django_capture_on_commit_callbacks):
    body = {"name": "draft", "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": upstream.openai_url, "default_model": "test-model",
            "credentials": {"api_key": UPSTREAM_KEY}}
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 202, r.json()
    test = ConnectionTest.objects.get(pk=r.json()["id"])
    assert test.status == "succeeded" and test.secrets is None
    assert not Connection.objects.filter(name="draft").exists()


def test_unsaved_settings_reuse_the_saved_connections_secret(
        staff_client, conn, upstream, django_capture_on_commit_callbacks):
    body = {"connection": str(conn.pk), "provider": "openai_compatible",
            "auth_method": "api_key", "base_url": upstream.openai_url,
            "default_model": "test-model-large"}
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 202, r.json()
    test = ConnectionTest.objects.get(pk=r.json()["id"])
    assert test.status == "succeeded", test.message
    assert upstream.last_request.key == UPSTREAM_KEY
    assert upstream.last_request.body["model"] == "test-model-large"
    conn.refresh_from_db()
    assert conn.status == "untested"  # a test of other settings does not change the saved status


def test_discovery_of_unsaved_settings_answers_the_model_ids(
        staff_client, upstream, django_capture_on_commit_callbacks):
    body = {"kind": "discover", "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": upstream.openai_url, "credentials": {"api_key": UPSTREAM_KEY}}
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 202 and r.json()["kind"] == "discover", r.json()
    assert r.json()["models"] is None  # not finished yet
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert poll["status"] == "succeeded", poll
    assert poll["models"] == sorted(upstream.models)
    assert poll["models_found"] == len(upstream.models)


def test_discovery_of_unsaved_settings_uses_the_named_connections_secret_but_not_its_list(
        staff_client, conn, upstream, django_capture_on_commit_callbacks):
    upstream.models = ["only-this-one"]
    body = {"kind": "discover", "connection": str(conn.pk)}
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert poll["status"] == "succeeded" and poll["models"] == ["only-this-one"], poll
    assert upstream.last_request.key == UPSTREAM_KEY
    assert not conn.discovered_models.exists()  # unsaved settings never change the saved list


def test_discovery_with_a_wrong_key_fails_without_models(
        staff_client, upstream, django_capture_on_commit_callbacks):
    body = {"kind": "discover", "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": upstream.openai_url, "credentials": {"api_key": "sk-wrong-key-0000000"}}
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert (poll["status"], poll["error_class"], poll["models"]) == ("failed", "auth", None)


@pytest.mark.parametrize("timeout_seconds,expected", [(1, "failed"), (6, "succeeded")])
def test_a_test_honours_the_connections_timeout(
        staff_client, upstream, django_capture_on_commit_callbacks, timeout_seconds, expected):
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY},
                             timeout_seconds=timeout_seconds)
    upstream.set_mode("slow", delay_ms=2500)
    r = start_test(staff_client, conn, django_capture_on_commit_callbacks)
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert poll["status"] == expected, poll
    assert poll["timeout_seconds"] == timeout_seconds
    if expected == "failed":
        assert poll["error_class"] == "timeout"


def test_an_unsaved_test_takes_its_timeout_from_the_body(
        staff_client, upstream, django_capture_on_commit_callbacks):
    upstream.set_mode("slow", delay_ms=2500)
    body = {"provider": "openai_compatible", "auth_method": "api_key", "timeout_seconds": 1,
            "base_url": upstream.openai_url, "credentials": {"api_key": UPSTREAM_KEY}}
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    poll = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert (poll["status"], poll["error_class"]) == ("failed", "timeout")


def test_stored_secret_does_not_follow_a_changed_host(staff_client, conn, upstream_factory):
    other = upstream_factory(name="elsewhere", api_keys=())
    body = {"connection": str(conn.pk), "base_url": other.url.replace("127.0.0.1", "localhost")
            + "/v1"}
    r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "credentials_required"
    assert ConnectionTest.objects.count() == 0


def test_masked_credentials_are_refused(staff_client, conn):
    body = {"connection": str(conn.pk), "credentials": {"api_key": "sk-****abcd"}}
    r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "masked_secret"


@pytest.mark.parametrize("body", [
    {}, {"provider": "nope"}, {"provider": "openai_compatible"},
    {"provider": "openai_compatible", "auth_method": "api_key", "base_url": "ftp://x"},
    {"connection": "not-a-uuid"}, {"credentials": "x", "provider": "openai"},
])
def test_bad_unsaved_bodies_are_400(staff_client, body):
    r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 400 and "error" in r.json()


def test_unknown_ids_are_404(staff_client):
    import uuid

    for url in (f"/api/v1/connection-tests/{uuid.uuid4()}/",
                f"/api/v1/connections/{uuid.uuid4()}/models/"):
        assert staff_client.get(url).status_code == 404
    for url in (f"/api/v1/connections/{uuid.uuid4()}/test/",
                f"/api/v1/connections/{uuid.uuid4()}/discover-models/"):
        assert staff_client.post(url).status_code == 404


def test_discovery_stores_live_models_then_lists_them(
        staff_client, conn, upstream, django_capture_on_commit_callbacks):
    upstream.models = ["m-one", "m-two"]
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post(f"/api/v1/connections/{conn.pk}/discover-models/")
    assert r.status_code == 202 and r.json()["kind"] == "discover"
    job = staff_client.get(f"/api/v1/connection-tests/{r.json()['id']}/").json()
    assert job["status"] == "succeeded" and job["models_found"] == 2
    listed = staff_client.get(f"/api/v1/connections/{conn.pk}/models/").json()
    assert [m["id"] for m in listed["results"]] == ["m-one", "m-two"]
    assert all(m["discovered_at"] and m["source"] == "live" for m in listed["results"])


def test_failed_discovery_is_failed_and_keeps_the_previous_models(
        staff_client, conn, upstream, django_capture_on_commit_callbacks):
    upstream.models = ["kept"]
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(f"/api/v1/connections/{conn.pk}/discover-models/")
    upstream.set_mode(401)
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post(f"/api/v1/connections/{conn.pk}/discover-models/")
    job = ConnectionTest.objects.get(pk=r.json()["id"])
    assert (job.status, job.error_class) == ("failed", "auth")
    assert list(conn.discovered_models.values_list("model_id", flat=True)) == ["kept"]


def test_discovery_without_a_listing_uses_the_catalog(staff_client, django_capture_on_commit_callbacks):
    conn = ConnectionFactory(provider="bedrock", auth_method="api_key", base_url=None,
                             default_model="")
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(f"/api/v1/connections/{conn.pk}/discover-models/")
    sources = set(conn.discovered_models.values_list("metadata__source", flat=True))
    assert conn.discovered_models.count() == 2 and sources == {"catalog"}


@override_settings(LLMCONN_PERSONAL_CONNECTIONS=False)  # (on: tests/workspaces/test_people.py)
def test_only_staff_start_tests(user_client, conn):
    assert user_client.post(f"/api/v1/connections/{conn.pk}/test/").status_code == 403
    assert user_client.post("/api/v1/connection-tests/", {}, format="json").status_code == 403


def test_anonymous_gets_401(api_client, conn):
    assert api_client.post(f"/api/v1/connections/{conn.pk}/test/").status_code in (401, 403)
    assert api_client.get(f"/api/v1/connections/{conn.pk}/models/").status_code in (401, 403)


@override_settings(LLMCONN_PERSONAL_CONNECTIONS=False)  # (on: tests/workspaces/test_people.py)
def test_workspace_managers_read_models_of_active_connections(user_client, plain_user, conn):
    from workspaces.models import MemberRole, Membership, Workspace

    assert user_client.get(f"/api/v1/connections/{conn.pk}/models/").status_code == 403
    ws = Workspace.objects.create(name="W", slug="w")
    Membership.objects.create(workspace=ws, user=plain_user, role=MemberRole.MANAGER)
    assert user_client.get(f"/api/v1/connections/{conn.pk}/models/").status_code == 200
    Connection.objects.filter(pk=conn.pk).update(is_active=False)
    assert user_client.get(f"/api/v1/connections/{conn.pk}/models/").status_code == 404


def test_list_tests_of_one_connection(staff_client, conn, django_capture_on_commit_callbacks):
    start_test(staff_client, conn, django_capture_on_commit_callbacks)
    rows = staff_client.get(f"/api/v1/connection-tests/?connection={conn.pk}").json()["results"]
    assert len(rows) == 1
    assert staff_client.get("/api/v1/connection-tests/?connection=bad").status_code == 400
