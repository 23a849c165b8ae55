"""Connection services: the masking rules and validation every entry point shares."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection as db_connection

from connections import services
from connections.models import Connection
from llmconn.errors import ValidationFailed

pytestmark = pytest.mark.django_db

KEY = "sk-test-aaaaaaaaaaaaWXYZ"


@pytest.fixture
def conn():
    return services.connection_create(name="team-a", provider="openai",
                                       credentials={"api_key": KEY})


def _stored(c) -> dict:
    return Connection.objects.get(pk=c.pk).secrets


def test_create_stores_hint_not_value(conn):
    assert conn.credential_summary() == {"api_key": {"set": True, "hint": "…WXYZ"}}


def test_short_secret_gets_no_hint():
    c = services.connection_create(name="s", provider="openai", credentials={"api_key": "short-key"})
    assert c.credential_summary() == {"api_key": {"set": True, "hint": ""}}


@pytest.mark.parametrize("masked", ["****", "sk-****WXYZ", "••••••••", "…WXYZ", "WXYZ", "...WXYZ",
                                    "sk-t**********WXYZ"])
def test_masked_key_sent_back_is_refused_and_keeps_stored_key(conn, masked):
    with pytest.raises(ValidationFailed) as exc:
        services.connection_update(connection=conn, credentials={"api_key": masked})
    assert exc.value.code == "masked_secret"
    assert _stored(conn) == {"api_key": KEY}


def test_masked_key_on_create_is_refused():
    with pytest.raises(ValidationFailed):
        services.connection_create(name="m", provider="openai", credentials={"api_key": "****"})
    assert not Connection.objects.filter(name="m").exists()


def test_update_without_credentials_keeps_them(conn):
    services.connection_update(connection=conn, default_model="gpt-4o", config={})
    assert _stored(conn) == {"api_key": KEY}


def test_credential_sent_replaces_it(conn):
    services.connection_update(connection=conn, credentials={"api_key": "sk-new-bbbbbbbbbbbb1234"})
    assert _stored(conn) == {"api_key": "sk-new-bbbbbbbbbbbb1234"}
    assert Connection.objects.get(pk=conn.pk).secret_hints == {"api_key": "1234"}


def test_empty_credential_is_refused_with_instructions(conn):
    with pytest.raises(ValidationFailed) as exc:
        services.connection_update(connection=conn, credentials={"api_key": "  "})
    assert "leave it out" in exc.value.message
    assert _stored(conn) == {"api_key": KEY}


def test_required_credential_cannot_be_removed(conn):
    with pytest.raises(ValidationError):
        services.connection_update(connection=conn, credentials={"api_key": None})
    assert _stored(conn) == {"api_key": KEY}


def test_new_base_url_host_without_secrets_is_refused(conn):
    with pytest.raises(ValidationFailed) as exc:
        services.connection_update(connection=conn, base_url="https://attacker.example/v1")
    assert exc.value.code == "credentials_required"
    fresh = Connection.objects.get(pk=conn.pk)
    assert fresh.base_url is None and fresh.secrets == {"api_key": KEY}


def test_new_base_url_host_with_secrets_sent_again_is_accepted(conn):
    services.connection_update(connection=conn, base_url="https://proxy.example/v1",
                               credentials={"api_key": "sk-other-cccccccccc9999"})
    fresh = Connection.objects.get(pk=conn.pk)
    assert fresh.base_url == "https://proxy.example/v1"


def test_same_host_new_path_keeps_secrets(conn):
    services.connection_update(connection=conn, base_url="https://api.openai.com/v2")
    assert _stored(conn) == {"api_key": KEY}


def test_changing_auth_method_drops_secrets_of_the_old_method():
    c = services.connection_create(name="o", provider="ollama", auth_method="api_key",
                                   credentials={"api_key": KEY})
    services.connection_update(connection=c, auth_method="none")
    fresh = Connection.objects.get(pk=c.pk)
    assert fresh.secrets == {} and fresh.secret_hints == {}


def test_every_change_increases_revision(conn):
    before = conn.revision
    updated = services.connection_update(connection=conn, default_model="gpt-4o")
    assert updated.revision == before + 1


def test_provider_with_one_auth_method_needs_no_auth_method(conn):
    assert conn.auth_method == "api_key"


def test_provider_with_several_auth_methods_requires_a_choice():
    with pytest.raises(ValidationFailed) as exc:
        services.connection_create(name="x", provider="ollama")
    assert "none" in exc.value.message


def test_duplicate_name_is_refused(conn):
    with pytest.raises(ValidationError) as exc:
        services.connection_create(name="team-a", provider="openai", credentials={"api_key": KEY})
    assert "name" in exc.value.message_dict


def test_set_default_moves_the_default_within_a_provider(conn):
    other = services.connection_create(name="team-b", provider="openai",
                                       credentials={"api_key": KEY})
    services.connection_set_default(connection=conn)
    services.connection_set_default(connection=other)
    defaults = list(Connection.objects.filter(provider="openai", is_default=True))
    assert defaults == [other]


def test_inactive_connection_cannot_become_default(conn):
    services.connection_update(connection=conn, is_active=False)
    with pytest.raises(ValidationFailed):
        services.connection_set_default(connection=conn)


def _is_postgres() -> bool:
    return db_connection.vendor == "postgresql"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_set_default_leaves_exactly_one_default():
    if not _is_postgres():
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it: SQLite serializes writers")
    conns = [services.connection_create(name=f"c{i}", provider="openai",
                                        credentials={"api_key": KEY}) for i in range(6)]
    barrier = threading.Barrier(len(conns))
    errors = []

    def worker(c):
        from django.db import connection as thread_db

        try:
            barrier.wait()
            services.connection_set_default(connection=c)
        except Exception as exc:  # a Conflict is acceptable; anything else is not
            errors.append(exc)
        finally:
            thread_db.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(type(e).__name__ == "Conflict" for e in errors), errors
    assert Connection.objects.filter(provider="openai", is_default=True).count() == 1
