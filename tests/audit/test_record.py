"""audit_record: one event per call, with actor, origin, target and fingerprints, never a secret."""

import pytest

from audit.context import audit_context
from audit.models import AppendOnlyError, AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record, secret_fingerprint
from tests.conftest import CANARY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db


def test_record_stores_target_actor_and_fingerprint_not_secret(staff_user):
    connection = ConnectionFactory(secrets={"api_key": CANARY})
    with audit_context(auth_kind="command"):
        event = audit_record(action="connection.update", target=connection, actor=staff_user,
                             changed_fields=["name", "credentials.api_key"],
                             secret_fingerprints={"api_key": CANARY})
    event = AuditEvent.objects.get(pk=event.pk)
    assert event.seq == 1
    assert (event.target_type, event.target_id, event.target_name) == (
        "connection", str(connection.pk), connection.name)
    assert event.actor_id == staff_user.pk and event.actor_name == "staff"
    assert event.auth_kind == "command"
    assert event.changed_fields == ["credentials.api_key", "name"]
    assert event.secret_fingerprints == {"api_key": secret_fingerprint(CANARY)}
    assert CANARY not in repr(AuditEvent.objects.values().get(pk=event.pk))


def test_events_form_a_valid_chain():
    for i in range(5):
        audit_record(action="test.event", target=("thing", i, f"thing {i}"))
    checked, problem = audit_chain_verify()
    assert (checked, problem) == (5, None)
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:]))


def test_saved_event_cannot_be_changed_or_deleted():
    event = audit_record(action="test.event", target=("thing", 1, "x"))
    event.action = "other"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="other")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"
