"""The encrypted connection store: secrets encrypted at rest, unreadable rows survive listing."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings

from connections import services
from connections.fields import UNREADABLE
from connections.models import Connection

pytestmark = pytest.mark.django_db


def _raw_rows() -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM connections_connection")
        return cursor.fetchall()


def test_raw_sql_row_never_contains_the_plaintext_secret(canary):
    services.connection_create(name="prod", provider="openai", credentials={"api_key": canary})
    dump = repr(_raw_rows())
    assert canary not in dump
    assert canary[-12:] not in dump
    assert Connection.objects.get(name="prod").secrets == {"api_key": canary}


def test_row_records_which_key_encrypted_it(canary):
    from connections.crypto import keyring

    conn = services.connection_create(name="k", provider="openai", credentials={"api_key": canary})
    assert Connection.objects.get(pk=conn.pk).secrets_key_id == keyring().primary_id


def test_old_key_still_decrypts_after_a_new_primary_key_is_added(canary):
    conn = services.connection_create(name="k", provider="openai", credentials={"api_key": canary})
    with override_settings(FERNET_KEYS=["new-primary-key", "test-fernet-key-primary"]):
        assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": canary}


def test_row_encrypted_with_an_unknown_key_lists_as_unreadable(canary):
    services.connection_create(name="good", provider="openai", credentials={"api_key": canary})
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        services.connection_create(name="orphan", provider="openai",
                                   credentials={"api_key": canary})
    rows = {c.name: c for c in Connection.objects.all()}  # must not raise InvalidToken
    assert rows["good"].credentials_readable
    assert rows["orphan"].secrets is UNREADABLE
    assert not rows["orphan"].credentials_readable
    assert rows["orphan"].credential_summary() == {
        "api_key": {"set": True, "hint": "", "readable": False}}


def test_unreadable_row_keeps_its_token_when_other_fields_change(canary):
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        conn = services.connection_create(name="orphan", provider="openai",
                                          credentials={"api_key": canary})
    services.connection_update(connection=conn, default_model="gpt-4o")
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": canary}


def test_unreadable_row_can_be_repaired_by_entering_the_secret_again(canary):
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        conn = services.connection_create(name="orphan", provider="openai",
                                          credentials={"api_key": "sk-old-0000000000000"})
    services.connection_update(connection=conn, credentials={"api_key": canary})
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": canary}


def test_saving_unreadable_secrets_directly_is_refused():
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        conn = services.connection_create(name="orphan", provider="openai",
                                          credentials={"api_key": "sk-1234567890abcdef"})
    loaded = Connection.objects.get(pk=conn.pk)
    with pytest.raises(ValueError):
        loaded.save()


def test_database_allows_only_one_default_per_provider():
    Connection.objects.create(name="a", provider="openai", auth_method="api_key", is_default=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        Connection.objects.create(name="b", provider="openai", auth_method="api_key",
                                  is_default=True)
    Connection.objects.create(name="c", provider="anthropic", auth_method="api_key",
                              is_default=True)
