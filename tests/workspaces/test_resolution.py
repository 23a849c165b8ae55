"""Resolution: what a workspace role calls, cached per process, refreshed on any change."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from connections.services import connection_update
from llmconn import versions
from tests.factories import ConnectionFactory
from workspaces import resolution
from workspaces.resolution import (
    ModelNotOffered,
    ResolutionError,
    resolve,
    resolve_model,
    resolve_uncached,
)
from workspaces.services import system_default_set, workspace_create, workspace_update


@pytest.fixture
def conn(db):
    return ConnectionFactory(name="c1", default_model="m1")


@pytest.fixture
def ws(conn):
    return workspace_create(name="W", bindings={"chat": {"connection": str(conn.pk)}})


def test_resolution_carries_everything_a_call_needs(ws, conn):
    r = resolve(workspace_id=ws.pk, role="chat")
    assert (r.provider, r.connection_name, r.model, r.source) == (
        "openai_compatible", "c1", "m1", "binding")
    kwargs = r.call_kwargs()
    assert kwargs["model"] == "openai/m1"
    assert kwargs["api_base"] == conn.base_url
    assert kwargs["api_key"] == conn.secrets["api_key"]
    assert conn.secrets["api_key"] not in repr(r)


def test_a_cached_resolution_costs_no_database_query(ws, django_assert_num_queries):
    resolve(workspace_id=ws.pk, role="chat")
    with django_assert_num_queries(0):
        for _ in range(10):
            resolve(workspace_id=ws.pk, role="chat")


def test_unconfigured_role_errors_are_cached_too(ws, django_assert_num_queries):
    with pytest.raises(ResolutionError):
        resolve(workspace_id=ws.pk, role="agent")
    with django_assert_num_queries(0), pytest.raises(ResolutionError):
        resolve(workspace_id=ws.pk, role="agent")


def test_binding_change_is_seen_by_the_next_resolution(ws):
    other = ConnectionFactory(name="c2", default_model="m2")
    before = resolve(workspace_id=ws.pk, role="chat")
    workspace_update(workspace=ws, bindings={"chat": {"connection": str(other.pk)}})
    after = resolve(workspace_id=ws.pk, role="chat")
    assert after.connection_name == "c2"
    assert before.connection_name == "c1"  # a call holding the old one keeps it unchanged


def test_connection_edit_is_seen_by_the_next_resolution(ws, conn):
    resolve(workspace_id=ws.pk, role="chat")
    connection_update(connection=conn, credentials={"api_key": "sk-new-value-123456"},
                      default_model="m9")
    r = resolve(workspace_id=ws.pk, role="chat")
    assert r.secrets["api_key"] == "sk-new-value-123456" and r.model == "m9"


def test_a_change_made_elsewhere_is_seen_through_the_shared_stamp(ws, conn):
    """Another process changed the row and bumped the stamp: this process re-resolves."""
    resolve(workspace_id=ws.pk, role="chat")
    type(conn).objects.filter(pk=conn.pk).update(default_model="m-elsewhere")
    assert resolve(workspace_id=ws.pk, role="chat").model == "m1"  # stamp unchanged: cached
    cache.incr(versions.GLOBAL)  # what the other process's service did
    assert resolve(workspace_id=ws.pk, role="chat").model == "m-elsewhere"


def test_a_lost_stamp_never_reuses_old_entries(ws, conn):
    resolve(workspace_id=ws.pk, role="chat")
    type(conn).objects.filter(pk=conn.pk).update(default_model="m-after-flush")
    cache.delete(versions.GLOBAL)  # cache flushed or evicted
    assert resolve(workspace_id=ws.pk, role="chat").model == "m-after-flush"


def test_cache_outage_resolves_from_the_database_every_time(ws, monkeypatch,
                                                            django_assert_num_queries):
    def broken(*args, **kwargs):
        raise ConnectionError("cache down")

    class DownRedis:
        get = mget = pipeline = staticmethod(broken)

    monkeypatch.setattr("django.core.cache.cache.get_many", broken)
    # versions are read straight from Redis when the cache is Redis (llmconn/rediscache.py)
    monkeypatch.setattr("llmconn.rediscache.client_and_key", lambda key: (DownRedis(), key))
    assert resolution.current_revision() is None
    assert resolve(workspace_id=ws.pk, role="chat").model == "m1"
    with django_assert_num_queries(1):  # not cached: binding, workspace and connection at once
        resolve(workspace_id=ws.pk, role="chat")  # (secrets and models: per connection state)


def test_a_cold_resolution_is_one_query_once_the_connection_is_known(
        ws, conn, django_assert_num_queries):
    """Thousands of workspaces on one connection: decrypting its secrets and listing its models
    happen once per connection state in a process, not once per workspace."""
    other = workspace_create(name="W-other", bindings={"chat": {"connection": str(conn.pk)}})
    first = resolve(workspace_id=ws.pk, role="chat")
    with django_assert_num_queries(1):
        second = resolve_uncached(workspace_id=other.pk, role="chat")
    assert second.secrets is first.secrets and second.offered_models is first.offered_models
    system_default_set(role="agent", connection=str(conn.pk))
    with django_assert_num_queries(2):  # through the system default: binding, then default
        resolve_uncached(workspace_id=other.pk, role="agent")


def test_system_default_and_model_override(ws, conn):
    default = ConnectionFactory(name="d", default_model="dm")
    system_default_set(role="agent", connection=str(default.pk), model="dm-big")
    r = resolve(workspace_id=ws.pk, role="agent")
    assert (r.source, r.connection_name, r.model) == ("system_default", "d", "dm-big")
    workspace_update(workspace=ws, bindings={"agent": {"connection": None, "model": "mine"}})
    assert resolve(workspace_id=ws.pk, role="agent").model == "mine"


def test_model_names_resolve_to_the_connection_offering_them(ws, conn):
    from django.utils import timezone

    conn.discovered_models.create(model_id="m-extra", discovered_at=timezone.now())
    workspace_update(workspace=ws, name="W2")
    assert resolve_model(workspace_id=ws.pk, model="m-extra").model == "m-extra"
    with pytest.raises(ModelNotOffered):
        resolve_model(workspace_id=ws.pk, model="m-unknown")


def test_unreadable_credentials_are_a_clear_error(ws, conn):
    from connections.fields import UNREADABLE

    from django.db import connection as db

    with db.cursor() as cursor:  # a token no configured key decrypts
        cursor.execute("UPDATE connections_connection SET secrets = %s WHERE id = %s",
                       [b"not-a-fernet-token", conn.pk.hex if db.vendor == "sqlite" else conn.pk])
    assert type(conn).objects.get(pk=conn.pk).secrets is UNREADABLE
    with pytest.raises(ResolutionError) as info:
        resolve(workspace_id=ws.pk, role="chat")
    assert info.value.code == "credentials_unreadable"


def test_a_call_reads_its_starting_versions_in_one_round_trip(ws, monkeypatch):
    """The base scopes and the call's own (its key's) in one MGET; what the gateway's first
    round trip already read is not read again."""
    resolution.current_revision()  # the base scopes exist from now on
    reads = []
    real = versions.read
    monkeypatch.setattr(versions, "read", lambda scopes, **kw: reads.append(list(scopes))
                        or real(scopes, **kw))
    extra = versions.key("0" * 64)
    revision = resolution.current_revision(extra)
    assert len(reads) == 1 and set(reads[0]) == {*resolution.BASE_SCOPES, extra}
    assert revision.values[versions.GLOBAL] is not None and revision.values[extra] is None

    reads.clear()
    known = {s: revision.values[s] for s in resolution.BASE_SCOPES}
    again = resolution.current_revision(known=known)
    assert reads == [] and again.values == known
