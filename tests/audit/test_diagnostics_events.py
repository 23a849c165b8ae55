"""Connection tests and model discoveries each write exactly one audit event, without secrets."""

import json

import pytest

from audit.models import AuditEvent
from audit.services import secret_fingerprint
from tests.conftest import CANARY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(staff_client):
    staff_client.defaults.update(HTTP_USER_AGENT="diag-agent/1.0", REMOTE_ADDR="203.0.113.9")
    return staff_client


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def _no_canary():
    dump = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert CANARY not in dump and CANARY[-12:] not in dump


def test_testing_a_saved_connection_records_who_tested_it(staff, staff_user,
                                                           django_capture_on_commit_callbacks):
    conn = ConnectionFactory(secrets={"api_key": CANARY})
    with django_capture_on_commit_callbacks(execute=True):
        r = staff.post(f"/api/v1/connections/{conn.pk}/test/", {}, format="json")
    assert r.status_code == 202, r.content
    [event] = _events("connection.test")
    assert (event.target_type, event.target_id) == ("connection", str(conn.pk))
    assert (event.actor_id, event.ip, event.user_agent) == (
        staff_user.pk, "203.0.113.9", "diag-agent/1.0")
    assert event.extra["test_id"] == r.json()["id"]
    _no_canary()


def test_testing_unsaved_settings_records_a_fingerprint_not_the_key(
        staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = staff.post("/api/v1/connection-tests/", {
            "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": "http://127.0.0.1:9/v1", "credentials": {"api_key": CANARY},
        }, format="json")
    assert r.status_code == 202, r.content
    [event] = _events("connection.test")
    assert event.extra["unsaved"] is True and event.extra["host"] == "127.0.0.1:9"
    assert event.secret_fingerprints == {"api_key": secret_fingerprint(CANARY)}
    _no_canary()


def test_discovering_models_records_one_event(staff, django_capture_on_commit_callbacks):
    conn = ConnectionFactory(secrets={"api_key": CANARY})
    with django_capture_on_commit_callbacks(execute=True):
        r = staff.post(f"/api/v1/connections/{conn.pk}/discover-models/", {}, format="json")
    assert r.status_code == 202, r.content
    [event] = _events("connection.discover")
    assert event.target_id == str(conn.pk)
    assert not _events("connection.test")
    _no_canary()
