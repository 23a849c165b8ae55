"""rotate_keys' fast paths: batches written by a second thread while the next is encrypted
(PostgreSQL outside a transaction), and a verification that trusts only unchanged values this
run wrote itself."""

import pytest
from django.db import connection as db
from django.test import override_settings

from connections import key_rotation
from connections.crypto import keyring
from connections.models import Connection
from tests.factories import ConnectionFactory

OLD, NEW, STRANGER = "old-fernet-key-for-tests", "new-fernet-key-for-tests", "a-key-nobody-has"


def _secrets_column():
    return next(c for c in key_rotation.encrypted_columns()
                if c.model is Connection and c.field_name == "secrets")


@pytest.mark.django_db(transaction=True)
def test_rotation_outside_a_transaction_re_encrypts_every_row_in_pipelined_batches():
    with override_settings(FERNET_KEYS=[OLD]):
        conns = [ConnectionFactory(secrets={"api_key": f"sk-pipe-{i:02d}-abcdefghijkl"})
                 for i in range(25)]
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        assert not db.in_atomic_block
        result = key_rotation.rotate_keys(batch_size=4)
        primary = keyring().primary_id
    assert result.ok and result.re_encrypted == 25 and result.changed_meanwhile == 0
    assert set(Connection.objects.values_list("secrets_key_id", flat=True)) == {primary}
    with override_settings(FERNET_KEYS=[NEW]):  # the old key is no longer needed
        assert {c.name: c.secrets["api_key"] for c in Connection.objects.all()} == {
            c.name: f"sk-pipe-{i:02d}-abcdefghijkl" for i, c in enumerate(conns)}
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        again = key_rotation.rotate_keys(batch_size=4)
    assert again.ok and again.to_do == 0 and again.re_encrypted == 0


@pytest.mark.django_db
def test_verification_decrypts_a_row_whose_value_is_not_the_one_this_run_wrote():
    with override_settings(FERNET_KEYS=[STRANGER]):
        stranger = ConnectionFactory(name="stranger")
    with override_settings(FERNET_KEYS=[NEW]):
        ring = keyring()
        fine = ConnectionFactory(name="fine")
    # the stranger's row claims to be on the primary key
    Connection.objects.filter(pk=stranger.pk).update(secrets_key_id=ring.primary_id)
    col = _secrets_column()
    with db.cursor() as cursor:
        cursor.execute("SELECT id, secrets FROM connections_connection WHERE name = 'fine'")
        fine_pk, fine_token = cursor.fetchone()
        cursor.execute("SELECT id FROM connections_connection WHERE name = 'stranger'")
        stranger_pk = cursor.fetchone()[0]
    known = {fine_pk: key_rotation._digest(bytes(fine_token)),
             stranger_pk: key_rotation._digest(bytes(fine_token))}  # not its value
    bad = key_rotation.verify_primary_only(col, ring, batch_size=10, known=known)
    assert bad == [str(stranger.pk)]
    assert str(fine.pk) not in bad
