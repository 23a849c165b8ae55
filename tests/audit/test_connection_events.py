"""Every connection action writes exactly one audit event, with who/how/where and no secret."""

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import secret_fingerprint
from connections.models import Connection
from connections.services import connection_create
from tests.conftest import CANARY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/connections/"
UA = "audit-test-agent/1.0"


def _only_event(**filters) -> AuditEvent:
    events = list(AuditEvent.objects.filter(**filters))
    assert len(events) == 1, [str(e) for e in AuditEvent.objects.all()]
    return events[0]


def _no_secret_anywhere():
    dump = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert CANARY not in dump
    assert CANARY[-12:] not in dump


@pytest.fixture
def staff(staff_client):
    staff_client.defaults.update(HTTP_USER_AGENT=UA, REMOTE_ADDR="203.0.113.7")
    return staff_client


def test_create_records_actor_origin_fields_and_fingerprint(staff, staff_user):
    r = staff.post(LIST_URL, {"name": "main-openai", "provider": "openai",
                              "credentials": {"api_key": CANARY}}, format="json")
    assert r.status_code == 201, r.content
    event = _only_event()
    assert event.action == "connection.create" and event.outcome == "success"
    assert (event.target_type, event.target_id, event.target_name) == (
        "connection", r.json()["id"], "main-openai")
    assert (event.actor_id, event.actor_name, event.auth_kind) == (staff_user.pk, "staff", "session")
    assert (event.ip, event.user_agent) == ("203.0.113.7", UA)
    assert {"name", "provider", "auth_method", "credentials.api_key"} <= set(event.changed_fields)
    assert event.secret_fingerprints == {"api_key": secret_fingerprint(CANARY)}
    _no_secret_anywhere()


def test_token_authentication_is_recorded_as_token(staff_user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")
    r = client.post(LIST_URL, {"name": "tok", "provider": "openai",
                               "credentials": {"api_key": CANARY}}, format="json")
    assert r.status_code == 201, r.content
    assert _only_event().auth_kind == "token"


def test_update_records_changed_fields_and_new_key_fingerprint(staff):
    conn = ConnectionFactory()
    r = staff.patch(f"{LIST_URL}{conn.pk}/", {"default_model": "other-model",
                                             "credentials": {"api_key": CANARY}}, format="json")
    assert r.status_code == 200, r.content
    event = _only_event()
    assert event.action == "connection.update"
    assert event.changed_fields == ["credentials.api_key", "default_model"]
    assert event.secret_fingerprints == {"api_key": secret_fingerprint(CANARY)}
    _no_secret_anywhere()


def test_update_without_credentials_records_no_fingerprint(staff):
    conn = ConnectionFactory()
    r = staff.patch(f"{LIST_URL}{conn.pk}/", {"name": "renamed"}, format="json")
    assert r.status_code == 200, r.content
    event = _only_event()
    assert event.changed_fields == ["name"] and event.secret_fingerprints == {}
    assert event.target_name == "renamed"


def test_delete_records_the_deleted_connection(staff):
    conn = ConnectionFactory(name="going-away")
    assert staff.delete(f"{LIST_URL}{conn.pk}/").status_code == 204
    event = _only_event()
    assert (event.action, event.target_id, event.target_name) == (
        "connection.delete", str(conn.pk), "going-away")


def test_set_default_records_one_event(staff):
    conn = ConnectionFactory()
    r = staff.post(f"{LIST_URL}{conn.pk}/set-default/")
    assert r.status_code == 200, r.content
    event = _only_event()
    assert event.action == "connection.set_default" and event.changed_fields == ["is_default"]


def test_refused_change_writes_no_success_event(staff):
    conn = ConnectionFactory()
    r = staff.patch(f"{LIST_URL}{conn.pk}/", {"credentials": {"api_key": "sk-****abcd"}},
                    format="json")
    assert r.status_code == 400
    assert not AuditEvent.objects.exists()


def test_denied_attempt_by_signed_in_user_is_recorded(user_client, plain_user):
    conn = ConnectionFactory()
    r = user_client.delete(f"{LIST_URL}{conn.pk}/")
    assert r.status_code == 403
    event = _only_event()
    assert (event.action, event.outcome, event.target_id) == (
        "connection.delete", "denied", str(conn.pk))
    assert event.actor_id == plain_user.pk
    assert Connection.objects.filter(pk=conn.pk).exists()


def test_denied_anonymous_write_is_recorded():
    r = APIClient().post(LIST_URL, {"name": "x", "provider": "openai",
                                    "credentials": {"api_key": CANARY}}, format="json")
    assert r.status_code == 401
    event = _only_event()
    assert (event.action, event.outcome, event.auth_kind, event.actor_id) == (
        "connection.create", "denied", "anonymous", None)
    _no_secret_anywhere()


def test_change_rolls_back_when_its_event_cannot_be_written(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("audit storage unavailable")

    monkeypatch.setattr(AuditEvent, "save", refuse)
    with pytest.raises(RuntimeError):
        connection_create(name="never", provider="openai", credentials={"api_key": CANARY})
    assert not Connection.objects.filter(name="never").exists()


def test_audit_api_is_staff_only_and_filters_by_target_and_action(staff, user_client):
    a, b = ConnectionFactory(name="a"), ConnectionFactory(name="b")
    for conn in (a, b):
        staff.patch(f"{LIST_URL}{conn.pk}/", {"default_model": "m2"}, format="json")
    staff.post(f"{LIST_URL}{a.pk}/set-default/")

    r = staff.get("/api/v1/audit-events/", {"target": str(a.pk)})
    assert r.status_code == 200
    assert [e["action"] for e in r.json()["results"]] == ["connection.set_default",
                                                          "connection.update"]
    r = staff.get("/api/v1/audit-events/", {"action": "connection.update"})
    assert {e["target"]["name"] for e in r.json()["results"]} == {"a", "b"}
    r = staff.get("/api/v1/audit-events/", {"target": "b"})
    assert len(r.json()["results"]) == 1

    assert user_client.get("/api/v1/audit-events/").status_code == 403
    assert APIClient().get("/api/v1/audit-events/").status_code == 401


def test_move_bindings_records_one_event_on_the_source(staff):
    from workspaces.models import Workspace, WorkspaceBinding

    source, target = ConnectionFactory(name="src"), ConnectionFactory(name="dst")
    workspace = Workspace.objects.create(name="Team", slug="team")
    WorkspaceBinding.objects.create(workspace=workspace, role="chat", connection=source)
    r = staff.post(f"{LIST_URL}{source.pk}/move-bindings/", {"to": str(target.pk)}, format="json")
    assert r.status_code == 200, r.content
    event = _only_event()
    assert (event.action, event.target_name) == ("connection.move_bindings", "src")
    assert event.extra["to_name"] == "dst" and event.extra["bindings"] == 1
