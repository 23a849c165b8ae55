"""rotate_keys / key_usage: online re-encryption under the primary Fernet key."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection as db
from django.test import override_settings
from fernet_fields import hkdf

from audit.models import AuditEvent
from connections import key_rotation
from connections.crypto import keyring
from connections.fields import UNREADABLE
from connections.models import Connection, ConnectionTest
from connections.services import connection_update
from tests.conftest import CANARY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db

OLD, NEW, STRANGER = "old-fernet-key-for-tests", "new-fernet-key-for-tests", "a-key-nobody-has"


class Killed(Exception):
    """Stands for the process being killed between two batches."""


@pytest.fixture
def old_rows():
    """Seven connections and two test rows, all encrypted with OLD."""
    with override_settings(FERNET_KEYS=[OLD]):
        conns = [ConnectionFactory(secrets={"api_key": f"sk-old-{i:02d}-abcdefghijkl"})
                 for i in range(7)]
        tests = [ConnectionTest.objects.create(provider="openai_compatible", auth_method="api_key",
                                               secrets={"api_key": f"sk-test-{i}-abcdefgh"})
                 for i in range(2)]
    return conns, tests


def _key_ids(model, field="secrets_key_id"):
    return set(model.objects.values_list(field, flat=True))


def _primary_id(keys):
    with override_settings(FERNET_KEYS=keys):
        return keyring().primary_id


def test_rotation_killed_after_a_batch_leaves_rows_readable_and_rerun_finishes(old_rows):
    conns, _ = old_rows
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        calls = []

        def kill_after_first_batch(done, total, label):
            calls.append(done)
            raise Killed

        with pytest.raises(Killed):
            key_rotation.rotate_keys(batch_size=2, progress=kill_after_first_batch)
        # One batch committed: two rows on NEW, the rest still on OLD, all readable.
        assert calls == [2]
        assert sorted(Connection.objects.values_list("secrets_key_id", flat=True)).count(
            _primary_id([NEW])) == 2
        for c in conns:
            assert Connection.objects.get(pk=c.pk).secrets == c.secrets

        result = key_rotation.rotate_keys(batch_size=2)
        assert result.ok and result.re_encrypted == 7
        again = key_rotation.rotate_keys(batch_size=2)
        assert (again.to_do, again.re_encrypted, again.relabelled) == (0, 0, 0)

    # The primary key alone now reads everything.
    with override_settings(FERNET_KEYS=[NEW]):
        for c in conns:
            assert Connection.objects.get(pk=c.pk).secrets == c.secrets
        assert all(t.secrets != UNREADABLE for t in ConnectionTest.objects.all())
        assert _key_ids(Connection) == {_primary_id([NEW])}
        assert _key_ids(ConnectionTest) == {_primary_id([NEW])}


def test_admin_edit_during_rotation_is_not_overwritten(old_rows, monkeypatch):
    conns, _ = old_rows
    target = min(conns, key=lambda c: str(c.pk).replace("-", ""))  # in the first batch
    real_read = key_rotation._read_batch
    edited = []

    def read_then_edit(col, primary_id, after, size):
        rows = real_read(col, primary_id, after, size)
        if col.model is Connection and col.field_name == "secrets" and not edited:
            # The admin saves a new key after rotation read the row, before it writes it back.
            connection_update(connection=target, credentials={"api_key": CANARY})
            edited.append(True)
        return rows

    monkeypatch.setattr(key_rotation, "_read_batch", read_then_edit)
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        result = key_rotation.rotate_keys(batch_size=3)
    assert edited and result.changed_meanwhile == 1 and result.ok
    with override_settings(FERNET_KEYS=[NEW]):
        assert Connection.objects.get(pk=target.pk).secrets == {"api_key": CANARY}


def test_unreadable_rows_make_the_command_fail_listing_them(old_rows):
    with override_settings(FERNET_KEYS=[STRANGER]):
        lost = ConnectionFactory(name="lost-key")
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        with pytest.raises(CommandError) as info:
            call_command("rotate_keys", "--batch-size", "4", stdout=io.StringIO(),
                         stderr=io.StringIO())
        assert str(lost.pk) in str(info.value)
        assert "connections.Connection.secrets" in str(info.value)
        # Everything else was rotated; the lost row keeps its token untouched.
        assert Connection.objects.exclude(pk=lost.pk).filter(
            secrets_key_id=_primary_id([NEW])).count() == 7
    event = AuditEvent.objects.get(action="keys.rotate")
    assert event.outcome == "failed" and event.extra["unreadable"] == 1


def test_dry_run_writes_nothing(old_rows):
    before = list(Connection.objects.order_by("pk").values_list("secrets_key_id", flat=True))
    out = io.StringIO()
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        call_command("rotate_keys", "--dry-run", stdout=out, stderr=io.StringIO())
    assert "9 value(s) would be re-encrypted" in out.getvalue()
    assert list(Connection.objects.order_by("pk").values_list("secrets_key_id", flat=True)) == before
    assert not AuditEvent.objects.filter(action="keys.rotate").exists()


def test_command_reports_success_and_records_one_event(old_rows):
    out, err = io.StringIO(), io.StringIO()
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        call_command("rotate_keys", "--batch-size", "4", stdout=out, stderr=err)
    assert "Re-encrypted 9 value(s)" in out.getvalue()
    assert "Verified" in out.getvalue()
    assert "9/9" in err.getvalue()  # progress
    event = AuditEvent.objects.get(action="keys.rotate")
    assert event.outcome == "success" and event.auth_kind == "command"
    assert event.extra["re_encrypted"] == 9


def test_rows_are_stored_as_fernet_tokens_of_the_primary_key_after_rotation(old_rows):
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        key_rotation.rotate_keys()
    with db.cursor() as cursor:
        cursor.execute("SELECT secrets FROM connections_connection")
        tokens = [bytes(t) for (t,) in cursor.fetchall()]
    primary = Fernet(hkdf.derive_fernet_key(NEW))
    assert all(primary.decrypt(t) for t in tokens)


def test_key_usage_counts_rows_per_key(old_rows):
    out = io.StringIO()
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        call_command("key_usage", stdout=out)
        text = out.getvalue()
        assert _primary_id([OLD]) in text and "configured" in text
        key_rotation.rotate_keys()
        out = io.StringIO()
        call_command("key_usage", stdout=out)
    assert "it can be removed from FERNET_KEYS" in out.getvalue()
