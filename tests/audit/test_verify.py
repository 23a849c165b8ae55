"""verify_audit finds events that were edited, deleted or reordered behind the ORM's back."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db


def _raw(sql: str, params=()):
    """Run SQL with the PostgreSQL append-only trigger disabled, as an attacker with DB access."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


@pytest.fixture
def events():
    return [audit_record(action="connection.update", target=("connection", f"id-{i}", f"c{i}"))
            for i in range(1, 6)]


def _verify_error() -> str:
    with pytest.raises(CommandError) as info:
        call_command("verify_audit")
    return str(info.value)


def test_intact_chain_verifies(events, capsys):
    call_command("verify_audit")
    assert "5 event(s) verified" in capsys.readouterr().out


def test_edited_event_is_found(events):
    _raw("UPDATE audit_auditevent SET target_name = 'someone-else' WHERE seq = 3")
    message = _verify_error()
    assert "event #3" in message and "changed" in message


def test_edited_event_with_recomputed_hash_breaks_the_next_link(events):
    from audit.chain import event_hash, values_of

    event = AuditEvent.objects.get(seq=3)
    event.outcome = "denied"
    _raw("UPDATE audit_auditevent SET outcome = 'denied', hash = %s WHERE seq = 3",
         [event_hash(values_of(event))])
    assert "event #4" in _verify_error()


def test_deleted_event_is_found(events):
    _raw("DELETE FROM audit_auditevent WHERE seq = 2")
    message = _verify_error()
    assert "#2 is missing" in message


def test_deleted_last_event_is_found(events):
    _raw("DELETE FROM audit_auditevent WHERE seq = 5")
    assert "after #4 are missing" in _verify_error()


def test_reordered_events_are_found(events):
    # Swap the positions of events 2 and 3 (seq is unique: go through a free number).
    _raw("UPDATE audit_auditevent SET seq = 1000 WHERE seq = 2")
    _raw("UPDATE audit_auditevent SET seq = 2 WHERE seq = 3")
    _raw("UPDATE audit_auditevent SET seq = 3 WHERE seq = 1000")
    message = _verify_error()
    assert "event #2" in message
