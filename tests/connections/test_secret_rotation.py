"""Staged provider-secret rotation: test first, promote only on success, roll back in time."""

import datetime as dt
import json

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import secret_fingerprint
from connections import secret_rotation
from connections.diagnostics import test_connection_settings
from connections.models import Connection
from connections.secret_rotation import SecretTestResult, connection_rotate_secret
from tests.conftest import CANARY, UPSTREAM_KEY
from tests.factories import ConnectionFactory
from workspaces.models import Workspace, WorkspaceBinding

pytestmark = pytest.mark.django_db

NEW_KEY = "sk-new-upstream-key-0002"


@pytest.fixture
def conn(upstream):
    return ConnectionFactory(base_url=upstream.openai_url, default_model="test-model",
                             secrets={"api_key": UPSTREAM_KEY})


def url(conn, what="rotate-secret"):
    return f"/api/v1/connections/{conn.pk}/{what}/"


def test_working_new_key_is_promoted_and_old_one_kept_for_rollback(staff_client, conn, upstream):
    upstream.api_keys.add(NEW_KEY)
    workspace = Workspace.objects.create(name="Team", slug="team")
    WorkspaceBinding.objects.create(workspace=workspace, role="chat", connection=conn)

    r = staff_client.post(url(conn), {"credentials": {"api_key": NEW_KEY}}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["rotated"] is True and body["test"]["ok"] is True
    assert body["credentials"]["api_key"]["hint"] == "…0002"
    assert body["revision"] == conn.revision + 1
    assert NEW_KEY[-12:] not in r.content.decode()

    stored = Connection.objects.get(pk=conn.pk)
    assert stored.secrets == {"api_key": NEW_KEY}
    assert stored.previous_secrets == {"api_key": UPSTREAM_KEY}
    assert stored.pending_secrets is None
    assert stored.previous_secrets_expires_at > timezone.now() + dt.timedelta(hours=23)
    # The workspace resolves through the connection: it uses the new key with no edit.
    binding = WorkspaceBinding.objects.select_related("connection").get(workspace=workspace)
    assert binding.connection.secrets == {"api_key": NEW_KEY}
    assert upstream.keys_seen()[-1] == NEW_KEY


def test_failing_new_key_leaves_the_old_key_in_use(staff_client, conn, upstream):
    r = staff_client.post(url(conn), {"credentials": {"api_key": NEW_KEY}}, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "rotation_test_failed"
    assert error["test"]["ok"] is False and error["test"]["error_class"] == "auth"
    assert "current secret stays in use" in error["message"]

    stored = Connection.objects.get(pk=conn.pk)
    assert stored.secrets == {"api_key": UPSTREAM_KEY}
    assert stored.pending_secrets is None and stored.previous_secrets is None
    assert stored.revision == conn.revision
    # The stored (old) key still works.
    assert test_connection_settings(stored).ok
    event = AuditEvent.objects.get(action="connection.rotate_secret")
    assert event.outcome == "failed" and event.extra["error_class"] == "auth"


def test_rollback_restores_the_previous_key_once(staff_client, conn, upstream):
    upstream.api_keys.add(NEW_KEY)
    assert staff_client.post(url(conn), {"credentials": {"api_key": NEW_KEY}},
                             format="json").status_code == 200
    r = staff_client.post(url(conn, "rollback-secret"))
    assert r.status_code == 200, r.content
    assert r.json()["rolled_back"] is True
    stored = Connection.objects.get(pk=conn.pk)
    assert stored.secrets == {"api_key": UPSTREAM_KEY}
    assert stored.previous_secrets is None
    assert stored.revision == conn.revision + 2
    r = staff_client.post(url(conn, "rollback-secret"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "nothing_to_roll_back"
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", "outcome"))
    assert actions == [("connection.rotate_secret", "success"),
                       ("connection.rollback_secret", "success")]


def test_rollback_after_the_window_is_refused_and_the_old_secret_forgotten(staff_client, conn,
                                                                          upstream):
    upstream.api_keys.add(NEW_KEY)
    staff_client.post(url(conn), {"credentials": {"api_key": NEW_KEY}}, format="json")
    Connection.objects.filter(pk=conn.pk).update(
        previous_secrets_expires_at=timezone.now() - dt.timedelta(minutes=1))
    assert staff_client.post(url(conn, "rollback-secret")).status_code == 409
    assert secret_rotation.connection_purge_expired_secrets() == 1
    assert Connection.objects.get(pk=conn.pk).previous_secrets is None


def test_rotation_never_shows_or_records_the_secret(staff_client, conn, upstream):
    upstream.api_keys.add(CANARY)
    r = staff_client.post(url(conn), {"credentials": {"api_key": CANARY}}, format="json")
    assert r.status_code == 200
    assert CANARY not in r.content.decode() and CANARY[-8:] not in r.content.decode()
    event = AuditEvent.objects.get(action="connection.rotate_secret")
    assert event.secret_fingerprints == {"api_key": secret_fingerprint(CANARY)}
    assert event.changed_fields == ["credentials.api_key"]
    assert CANARY not in json.dumps(list(AuditEvent.objects.values()), default=str)


@pytest.mark.parametrize("body", [{}, {"credentials": {}}, {"credentials": "x"},
                                  {"credentials": {"api_key": "sk-****0001"}},
                                  {"credentials": {"api_key": ""}},
                                  {"credentials": {"nonsense": "abcdefghijklmnop"}}])
def test_bad_input_is_a_400_and_nothing_is_staged(staff_client, conn, body):
    r = staff_client.post(url(conn), body, format="json")
    assert r.status_code == 400, r.content
    assert set(r.json()) == {"error"}
    stored = Connection.objects.get(pk=conn.pk)
    assert stored.pending_secrets is None and stored.secrets == {"api_key": UPSTREAM_KEY}


def test_non_staff_is_refused_and_the_attempt_recorded(user_client, conn):
    r = user_client.post(url(conn), {"credentials": {"api_key": NEW_KEY}}, format="json")
    assert r.status_code == 403
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.target_id) == (
        "connection.rotate_secret", "denied", str(conn.pk))


def test_unknown_connection_is_a_404(staff_client):
    r = staff_client.post("/api/v1/connections/00000000-0000-0000-0000-000000000000/rotate-secret/",
                          {"credentials": {"api_key": NEW_KEY}}, format="json")
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_tester_crash_keeps_the_old_key(conn):
    def broken(candidate):
        raise RuntimeError("boom")

    outcome = connection_rotate_secret(connection=conn, credentials={"api_key": NEW_KEY},
                                       tester=broken)
    assert not outcome.promoted and outcome.test.error_class == "provider_error"
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": UPSTREAM_KEY}


def test_a_rotation_overtaken_by_another_changes_nothing(conn):
    from llmconn.errors import Conflict

    def overtaken(candidate):
        other = Connection.objects.get(pk=conn.pk)
        other.pending_secrets = {"api_key": "sk-someone-else-0003"}
        other.save(update_fields=["pending_secrets", "pending_secrets_key_id"])
        return SecretTestResult(ok=True)

    with pytest.raises(Conflict):
        connection_rotate_secret(connection=conn, credentials={"api_key": NEW_KEY},
                                 tester=overtaken)
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": UPSTREAM_KEY}


def test_housekeeping_task_forgets_previous_secrets_after_the_rollback_window(db):
    from datetime import timedelta

    from django.utils import timezone

    from connections.models import Connection
    from connections.tasks import connection_tests_reap_task
    from tests.factories import ConnectionFactory

    expired = ConnectionFactory()
    fresh = ConnectionFactory()
    Connection.objects.filter(pk=expired.pk).update(
        previous_secrets={"api_key": "old-key-000000000000"},
        previous_secrets_expires_at=timezone.now() - timedelta(minutes=1))
    Connection.objects.filter(pk=fresh.pk).update(
        previous_secrets={"api_key": "old-key-111111111111"},
        previous_secrets_expires_at=timezone.now() + timedelta(hours=1))
    result = connection_tests_reap_task.apply().get()
    assert result["expired_secrets_purged"] == 1
    assert Connection.objects.get(pk=expired.pk).previous_secrets is None
    assert Connection.objects.get(pk=fresh.pk).previous_secrets == {"api_key": "old-key-111111111111"}
