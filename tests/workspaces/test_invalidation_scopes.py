"""Targeted invalidation: an edit makes stale exactly the cached entries that depend on it.

Each process keeps resolutions and API keys in memory with the versions of the scopes they
depend on (llmconn/versions.py). These tests prove each scope both ways: the edit reaches the
next call, and an unrelated edit leaves the cached entry in place (no query to use it). "Another
process" is simulated the way it really acts on this one: rows changed in the database without
any service, then the version of a scope bumped in the shared cache; the live-server tests at
the end do it with a real second process (uvicorn).
"""

from __future__ import annotations

import pytest
from django.core.cache import cache

from connections import diagnostics
from connections.models import Connection
from connections.services import connection_set_default, connection_update
from llmconn import versions
from workspaces import resolution
from workspaces.keys import authenticate_key
from workspaces.resolution import ResolutionError, current_revision, resolve, resolve_model
from workspaces.services import (
    api_key_create,
    api_key_revoke,
    system_default_set,
    workspace_update,
)

from .conftest import require_shared_cache

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def two(upstream, make_connection, make_workspace):
    """Workspaces A and B, each bound to its own connection; C a connection nobody uses."""
    ca = make_connection(upstream, name="conn-a")
    cb = make_connection(upstream, name="conn-b")
    cc = make_connection(upstream, name="conn-unused")
    wa = make_workspace("A", chat=ca)
    wb = make_workspace("B", chat=cb)
    return {"ca": ca, "cb": cb, "cc": cc, "wa": wa, "wb": wb}


def _warm(*workspaces, role="chat"):
    for ws in workspaces:
        resolve(workspace_id=ws.pk, role=role)


def _change_elsewhere(conn: Connection, **fields) -> None:
    """What another process's service does: the row changes, this process is not told."""
    Connection.objects.filter(pk=conn.pk).update(**fields)


def test_an_unrelated_connection_edit_leaves_cached_resolutions_in_place(
        two, django_assert_num_queries):
    _warm(two["wa"], two["wb"])
    connection_update(connection=two["cc"], default_model="other-model")
    with django_assert_num_queries(0):
        _warm(two["wa"], two["wb"])


def test_a_connection_edit_reaches_only_the_workspaces_that_use_it(
        two, django_assert_num_queries):
    _warm(two["wa"], two["wb"])
    connection_update(connection=two["ca"], default_model="m-new")
    assert resolve(workspace_id=two["wa"].pk, role="chat").model == "m-new"
    with django_assert_num_queries(0):
        assert resolve(workspace_id=two["wb"].pk, role="chat").model == "test-model"


def test_a_bumped_connection_version_is_seen_from_another_process(two):
    require_shared_cache()
    _warm(two["wa"], two["wb"])
    _change_elsewhere(two["ca"], default_model="m-elsewhere")
    _change_elsewhere(two["cb"], default_model="m-elsewhere-too")
    versions.bump_connections(two["ca"].pk)  # what the other process's service did
    assert resolve(workspace_id=two["wa"].pk, role="chat").model == "m-elsewhere"
    # B's connection was changed without a bump: B's entry was not touched by A's bump
    assert resolve(workspace_id=two["wb"].pk, role="chat").model == "test-model"


def test_a_fallback_connection_edit_reaches_the_bindings_listing_it(
        upstream, make_connection, make_workspace, django_assert_num_queries):
    primary = make_connection(upstream, name="primary")
    backup = make_connection(upstream, name="backup")
    ws = make_workspace("F", chat=primary)
    workspace_update(workspace=ws, bindings={"chat": {"fallbacks": [
        {"connection": str(backup.pk), "model": None}]}})
    other = make_workspace("Other", chat=primary)
    _warm(ws, other)
    connection_update(connection=backup, default_model="backup-2")
    assert resolve(workspace_id=ws.pk, role="chat").fallback_chain[0].model == "backup-2"
    with django_assert_num_queries(0):
        _warm(other)


def test_an_inactive_fallback_comes_back_when_reactivated(
        upstream, make_connection, make_workspace):
    primary = make_connection(upstream, name="primary")
    backup = make_connection(upstream, name="backup")
    ws = make_workspace("F", chat=primary)
    workspace_update(workspace=ws, bindings={"chat": {"fallbacks": [
        {"connection": str(backup.pk), "model": None}]}})
    connection_update(connection=backup, is_active=False)
    assert resolve(workspace_id=ws.pk, role="chat").fallback_chain == ()
    connection_update(connection=backup, is_active=True)
    assert len(resolve(workspace_id=ws.pk, role="chat").fallback_chain) == 1


def test_a_system_default_change_reaches_workspaces_using_it_only(
        two, upstream, make_connection, make_workspace, django_assert_num_queries):
    d1 = make_connection(upstream, name="default-1", default_model="d1")
    d2 = make_connection(upstream, name="default-2", default_model="d2")
    system_default_set(role="chat", connection=str(d1.pk))
    unbound = make_workspace("Unbound")
    _warm(unbound, two["wa"])
    assert resolve(workspace_id=unbound.pk, role="chat").model == "d1"
    system_default_set(role="chat", connection=str(d2.pk))
    assert resolve(workspace_id=unbound.pk, role="chat").model == "d2"
    with django_assert_num_queries(0):  # A binds its own connection: untouched
        _warm(two["wa"])


def test_an_edit_of_the_default_connection_reaches_workspaces_resolving_through_it(
        upstream, make_connection, make_workspace):
    d1 = make_connection(upstream, name="default-1", default_model="d1")
    system_default_set(role="chat", connection=str(d1.pk))
    unbound = make_workspace("Unbound")
    _warm(unbound)
    connection_update(connection=d1, default_model="d1-new")
    assert resolve(workspace_id=unbound.pk, role="chat").model == "d1-new"


def test_a_workspace_edit_reaches_that_workspace_only(two, django_assert_num_queries):
    _warm(two["wa"], two["wb"])
    workspace_update(workspace=two["wa"], bindings={"chat": {"connection": str(two["cb"].pk)}})
    assert resolve(workspace_id=two["wa"].pk, role="chat").connection_name == "conn-b"
    with django_assert_num_queries(0):
        _warm(two["wb"])


def test_an_unconfigured_role_is_retried_after_any_connection_change(two):
    with pytest.raises(ResolutionError):
        resolve(workspace_id=two["wa"].pk, role="agent")
    system_default_set(role="agent", connection=str(two["cc"].pk))
    assert resolve(workspace_id=two["wa"].pk, role="agent").connection_name == "conn-unused"


def test_a_revoked_key_is_refused_and_other_keys_stay_cached(two, django_assert_num_queries):
    k1, raw1 = api_key_create(workspace=two["wa"])
    _, raw2 = api_key_create(workspace=two["wa"])
    for raw in (raw1, raw2):
        assert authenticate_key(raw, revision=current_revision()) is not None
    api_key_revoke(api_key=k1)
    assert authenticate_key(raw1, revision=current_revision()) is None
    with django_assert_num_queries(0):
        assert authenticate_key(raw2, revision=current_revision()) is not None


def test_a_test_result_changes_nothing_cached(two, upstream, django_assert_num_queries):
    _warm(two["wa"])
    scopes = [versions.GLOBAL, versions.EPOCH, versions.connection(two["ca"].pk)]
    before = versions.read(scopes)
    upstream.set_mode(500)  # a failing test: the status changes, the settings do not
    job = diagnostics.connection_test_request(connection=two["ca"])
    diagnostics.connection_test_run(test_id=job.pk)
    assert Connection.objects.get(pk=two["ca"].pk).status == "failed"
    assert versions.read(scopes) == before
    with django_assert_num_queries(0):
        _warm(two["wa"])


def test_a_discovery_that_finds_the_same_models_changes_nothing_cached(
        two, django_assert_num_queries):
    for expected_bump in (True, False):  # the first one stores the list, the second finds it
        before = versions.read([versions.connection(two["ca"].pk)])
        job = diagnostics.connection_discover_models_request(connection=two["ca"])
        diagnostics.connection_discover_models_run(test_id=job.pk)
        assert (versions.read([versions.connection(two["ca"].pk)]) != before) is expected_bump
        _warm(two["wa"])
    with django_assert_num_queries(0):
        _warm(two["wa"])


def test_a_discovered_model_is_accepted_on_the_next_call(two, upstream):
    _warm(two["wa"])
    with pytest.raises(resolution.ModelNotOffered):
        resolve_model(workspace_id=two["wa"].pk, model="brand-new-model")
    upstream.models.append("brand-new-model")
    job = diagnostics.connection_discover_models_request(connection=two["ca"])
    diagnostics.connection_discover_models_run(test_id=job.pk)
    assert resolve_model(workspace_id=two["wa"].pk, model="brand-new-model").model == \
        "brand-new-model"


def test_moving_the_provider_default_bumps_the_previous_default_too(two):
    connection_set_default(connection=two["ca"])
    before = versions.read([versions.connection(two["ca"].pk)])
    connection_set_default(connection=two["cb"])
    assert versions.read([versions.connection(two["ca"].pk)]) != before


def test_a_connection_changed_while_resolving_is_not_cached_under_its_new_version(
        two, monkeypatch):
    """The race the connection epoch closes: the rows are read, then the connection changes and
    its version is bumped, then this process reads the version. The entry must not be kept."""
    require_shared_cache()
    real = resolution.resolve_uncached

    def racing(**kwargs):
        value = real(**kwargs)
        _change_elsewhere(two["ca"], default_model="m-raced")
        versions.bump_connections(two["ca"].pk)
        return value

    monkeypatch.setattr(resolution, "resolve_uncached", racing)
    assert resolve(workspace_id=two["wa"].pk, role="chat").model == "test-model"
    monkeypatch.setattr(resolution, "resolve_uncached", real)
    assert resolve(workspace_id=two["wa"].pk, role="chat").model == "m-raced"


def test_a_lost_connection_version_never_reuses_old_entries(two):
    require_shared_cache()
    _warm(two["wa"])
    _change_elsewhere(two["ca"], default_model="m-after-flush")
    cache.delete(versions.connection(two["ca"].pk))  # evicted or flushed
    assert resolve(workspace_id=two["wa"].pk, role="chat").model == "m-after-flush"


def test_the_warm_gateway_path_keeps_its_one_round_trip_across_an_unrelated_edit(
        two, gateway, make_key, no_sync_context):
    require_shared_cache()
    key = make_key(two["wa"])
    assert gateway.post("/v1/chat/completions", key,
                        {"model": "chat", "messages": HELLO}).status_code == 200
    assert gateway.post("/v1/chat/completions", key,
                        {"model": "chat", "messages": HELLO}).status_code == 200
    connection_update(connection=two["cc"], default_model="x")
    workspace_update(workspace=two["wb"], name="B2")
    assert gateway.post("/v1/chat/completions", key,
                        {"model": "chat", "messages": HELLO}).status_code == 200
    assert len(no_sync_context) == 1  # only the first call took the sync path
    connection_update(connection=two["ca"], default_model="test-model")
    assert gateway.post("/v1/chat/completions", key,
                        {"model": "chat", "messages": HELLO}).status_code == 200
    assert len(no_sync_context) == 2  # the edit of its own connection: resolved again


def test_a_due_last_used_write_keeps_the_call_warm_and_is_written_in_a_batch(
        two, gateway, make_key, no_sync_context, django_assert_num_queries):
    """With thousands of keys round-robin, each key's once-a-minute last-used write must not
    send its call through the sync path: it is queued and written with the others at once."""
    require_shared_cache()
    from workspaces import services
    from workspaces.models import WorkspaceAPIKey

    keys = [make_key(two["wa"], name=f"k{i}") for i in range(3)]
    for key in keys:  # first calls: the sync path (unknown key), last-used written there
        gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    WorkspaceAPIKey.objects.update(last_used_at=None)
    services._TOUCHED.clear()  # a minute later: every key's write is due again
    taken = len(no_sync_context)
    for key in keys:
        assert gateway.post("/v1/chat/completions", key,
                            {"model": "chat", "messages": HELLO}).status_code == 200
    assert len(no_sync_context) == taken  # all three stayed warm
    assert len(services._TOUCH_QUEUE) == 3
    with django_assert_num_queries(1):  # one UPDATE for all (inside the test's transaction)
        assert services.api_key_touch_flush() == 3
    assert not WorkspaceAPIKey.objects.filter(last_used_at__isnull=True).exists()


def test_unknown_keys_leave_nothing_in_the_cache_and_known_ones_get_their_version_back(
        two, django_assert_num_queries):
    """A flood of made-up keys must not fill Redis with versions; a real key whose version was
    lost is authenticated, gets a version again and is then cached."""
    require_shared_cache()
    from workspaces.services import hash_api_key

    fake = "lck_" + "x" * 43
    assert authenticate_key(fake, revision=current_revision(versions.key(hash_api_key(fake)))
                            ) is None
    assert cache.get(versions.key(hash_api_key(fake))) is None
    _, raw = api_key_create(workspace=two["wa"])
    cache.delete(versions.key(hash_api_key(raw)))  # lost (evicted, or a key made before)
    assert authenticate_key(raw, revision=current_revision()) is not None
    assert cache.get(versions.key(hash_api_key(raw))) is not None
    with django_assert_num_queries(0):
        assert authenticate_key(raw, revision=current_revision()) is not None
