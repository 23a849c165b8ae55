"""The gateway's warm path (no hand-off to the sync thread when the key and the resolution are
cached) and the group commit of usage rows (workspaces/calls.py)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache

from llmconn import versions
from workspaces import budgets, calls, services
from workspaces.gateway import planning as gateway_planning
from workspaces.models import UsageRecord
from workspaces.resolution import resolve

from .conftest import require_shared_cache

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def setup(upstream, make_connection, make_workspace, make_key):
    conn = make_connection(upstream, name="primary")
    ws = make_workspace("Alpha", chat=conn)
    return {"up": upstream, "conn": conn, "ws": ws, "key": make_key(ws)}


def test_a_warm_call_does_not_hand_off_to_the_sync_thread(gateway, setup, no_sync_context):
    require_shared_cache()
    assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    assert len(no_sync_context) == 1  # cold: key and resolution loaded from the database
    for _ in range(3):
        response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
        assert response.status_code == 200, response.content
    assert len(no_sync_context) == 1
    assert UsageRecord.objects.filter(workspace=setup["ws"], status_code=200).count() == 4


def test_a_warm_stream_does_not_hand_off_and_records_its_tokens(gateway, setup,
                                                                 no_sync_context):
    require_shared_cache()
    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    response, events = gateway.stream(CHAT, setup["key"],
                                      {"model": "chat", "messages": HELLO, "stream": True})
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert len(no_sync_context) == 1
    record = UsageRecord.objects.filter(stream=True).get()
    assert record.output_tokens > 0


def test_a_streams_usage_row_is_written_before_its_last_event(gateway, setup):
    """As for a non-streamed call: a client that has the whole answer (`[DONE]` or an error
    event) can already see the call in the usage records."""
    from asgiref.sync import sync_to_async

    def count():
        return UsageRecord.objects.filter(stream=True).count()

    async def run(body):
        response = await gateway.client.post(
            CHAT, data=json.dumps(body), headers={"Authorization": f"Bearer {setup['key']}"})
        seen = []
        async for part in response.streaming_content:
            text = part.decode()
            if "[DONE]" in text or '"error"' in text:
                seen.append(await sync_to_async(count)())
        return seen

    assert async_to_sync(run)({"model": "chat", "messages": HELLO, "stream": True}) == [1]
    setup["up"].set_mode("bad_json")  # fails mid-stream: an error event ends it
    assert async_to_sync(run)({"model": "chat", "messages": HELLO, "stream": True}) == [2]


def test_a_moved_stamp_sends_the_call_to_the_sync_path(gateway, setup, no_sync_context):
    require_shared_cache()
    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    cache.incr(versions.GLOBAL)  # another process changed something
    assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    assert len(no_sync_context) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_a_stale_cached_key_never_reaches_the_provider(gateway, setup, stream):
    """Another process changes the connection's key: this process still holds the old one in
    memory, but the stamp read of the next call sees the change: the call is planned again
    from the database and sent with the new key, never with the old one."""
    require_shared_cache()
    from connections.models import Connection

    body = {"model": "chat", "messages": HELLO, "stream": stream}
    assert gateway.post(CHAT, setup["key"], body).status_code == 200
    assert gateway.post(CHAT, setup["key"], body).status_code == 200  # warm
    conn = Connection.objects.get(pk=setup["conn"].pk)
    conn.secrets = {"api_key": "sk-rotated-elsewhere-0001"}
    # no local invalidation: the row changes as connection services change it (its revision
    # grows with every settings change)
    Connection.objects.filter(pk=conn.pk).update(secrets=conn.secrets,
                                                 revision=conn.revision + 1)
    cache.incr(versions.GLOBAL)  # ... as another process's change bumps the stamp
    before = setup["up"].request_count
    gateway.post(CHAT, setup["key"], body)
    sent = setup["up"].requests[before:]
    assert [r.key for r in sent] == ["sk-rotated-elsewhere-0001"]  # once, the new key only


def test_a_throttled_warm_call_reaches_no_provider(gateway, setup, settings):
    require_shared_cache()
    settings.LLMCONN_THROTTLE_GATEWAY = "2/min"
    if int(time.time()) % 60 > 55:
        time.sleep(61 - int(time.time()) % 60)
    for _ in range(2):
        assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                            ).status_code == 200
    before = setup["up"].request_count
    for stream in (False, True):
        response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO,
                                                     "stream": stream})
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert setup["up"].request_count == before


def test_a_revoked_key_is_refused_on_the_next_call_after_warm_calls(gateway, setup):
    require_shared_cache()
    for _ in range(2):
        assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                            ).status_code == 200
    services.api_key_revoke(api_key=setup["ws"].api_keys.get())
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_an_unbound_role_is_refused_on_the_warm_path_as_on_the_cold_one(
        gateway, setup, no_sync_context):
    require_shared_cache()
    first = gateway.post(CHAT, setup["key"], {"model": "embedding", "messages": HELLO})
    second = gateway.post(CHAT, setup["key"], {"model": "embedding", "messages": HELLO})
    assert first.status_code == second.status_code == 503
    assert first.json() == second.json()
    assert len(no_sync_context) == 1


def test_the_throttle_counts_every_call_once_on_both_paths(gateway, setup, settings):
    require_shared_cache()
    settings.LLMCONN_THROTTLE_GATEWAY = "3/min"
    if int(time.time()) % 60 > 55:  # the fixed window must not turn over mid-test
        time.sleep(61 - int(time.time()) % 60)
    codes = [gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}).status_code
             for _ in range(2)]
    cache.incr(versions.GLOBAL)  # the third call is counted on the warm path, then resolved
    codes += [gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}).status_code
              for _ in range(2)]
    assert codes == [200, 200, 200, 429]


def test_warm_requests_refused_for_their_body_are_not_counted(gateway, setup, settings):
    require_shared_cache()
    settings.LLMCONN_THROTTLE_GATEWAY = "3/min"
    if int(time.time()) % 60 > 55:  # the fixed window must not turn over mid-test
        time.sleep(61 - int(time.time()) % 60)
    good = {"model": "chat", "messages": HELLO}
    codes = [gateway.post(CHAT, setup["key"], good).status_code for _ in range(2)]
    # warm now: the round trip is sent before the body is checked, then taken back
    codes += [gateway.post(CHAT, setup["key"], {"model": "chat"}).status_code
              for _ in range(3)]
    codes += [gateway.post(CHAT, setup["key"], good).status_code for _ in range(2)]
    assert codes == [200, 200, 400, 400, 400, 200, 429]


def test_the_early_round_trip_leaves_no_redis_connection_behind(gateway, setup):
    require_shared_cache()
    from llmconn.rediscache import client_and_key

    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    pool = client_and_key(versions.GLOBAL)[0].connection_pool
    for body in ({"model": "chat", "messages": HELLO}, {"model": "chat"}, [1],
                 {"model": "chat", "messages": HELLO, "api_base": "http://x"},
                 {"model": "nope", "messages": HELLO}):
        gateway.post(CHAT, setup["key"], body)
        gateway.post("/v1/embeddings", setup["key"], {**body, "input": "x"}
                     if isinstance(body, dict) else body)
    assert not pool._in_use_connections  # every connection went back, its replies read
    assert len(pool._available_connections) <= 2
    assert cache.get(versions.GLOBAL) is not None  # and the pool still answers


def test_a_binding_with_fallbacks_takes_the_sync_path(
        gateway, upstream, make_connection, make_workspace, make_key, no_sync_context):
    require_shared_cache()
    primary = make_connection(upstream, name="primary")
    backup = make_connection(upstream, name="backup")
    ws = services.workspace_create(name="Beta", bindings={"chat": {
        "connection": str(primary.pk), "fallbacks": [{"connection": str(backup.pk)}]}})
    key = make_key(ws)
    for _ in range(2):
        assert gateway.post(CHAT, key, {"model": "chat", "messages": HELLO}).status_code == 200
    assert len(no_sync_context) == 2  # cool-down flags are read on the sync path


def test_a_workspace_with_a_budget_takes_the_sync_path(gateway, setup, no_sync_context):
    require_shared_cache()
    budgets.budget_create(scope="workspace", workspace=setup["ws"], limit=1000,
                           metric="tokens")
    for _ in range(2):
        assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                            ).status_code == 200
    assert len(no_sync_context) == 2  # budget counters are read on the sync path


# --- group commit ---------------------------------------------------------------------------

def _plan(setup) -> tuple[calls.Plan, object]:
    resolved = resolve(workspace_id=setup["ws"].pk, role="chat")
    plan = calls.Plan(workspace_id=setup["ws"].pk, api_key_id=None, endpoint="chat",
                      candidates=(resolved,))
    return plan, resolved


def test_concurrent_records_are_written_together_and_each_exactly_once(setup, monkeypatch):
    plan, resolved = _plan(setup)
    batches = []
    original = services.usage_records_create

    def spy(*, rows):
        batches.append(len(rows))
        return original(rows=rows)

    monkeypatch.setattr(services, "usage_records_create", spy)

    async def run():
        await asyncio.gather(*[
            calls.record(plan, calls.Attempt(resolved, 1, time.perf_counter()), stream=False,
                         status=200, input_tokens=i, output_tokens=1) for i in range(1, 21)])

    async_to_sync(run)()
    assert sum(batches) == 20
    assert len(batches) < 20  # rows that arrived while one batch was written went together
    assert sorted(UsageRecord.objects.values_list("input_tokens", flat=True)) == list(
        range(1, 21))


def test_a_record_returns_once_its_row_is_committed(setup):
    plan, resolved = _plan(setup)

    async def run():
        await calls.record(plan, calls.Attempt(resolved, 1, time.perf_counter()), stream=True,
                           status=200, input_tokens=5, output_tokens=7)
        return await asyncio.to_thread(lambda: None)

    async_to_sync(run)()
    assert UsageRecord.objects.get().output_tokens == 7


def test_a_batch_with_a_deleted_workspace_keeps_every_row(setup):
    row = dict(workspace_id=setup["ws"].pk, connection_id=str(setup["conn"].pk), api_key_id=None,
               role="chat", model="test-model", endpoint="chat", stream=False, status_code=200,
               input_tokens=3)
    gone = {**row, "workspace_id": setup["ws"].pk + 10_000, "workspace_name": "Gone"}
    results = services.usage_records_create(rows=[row, gone, row])
    assert None not in results
    assert UsageRecord.objects.count() == 3
    assert UsageRecord.objects.get(pk=results[1].pk).workspace_name == "Gone"


def test_a_caller_cancelled_as_its_turn_to_write_comes_loses_no_row(monkeypatch):
    written, tasks = [], {}

    async def write(items):
        written.extend(items)  # as sync_to_async: the thread finishes even if the caller goes
        if items == ["a"]:
            await tasks["gate"].wait()
            # runs after this batch hands the turn to "b", before "b" resumes
            asyncio.get_running_loop().call_soon(tasks["b"].cancel)

    monkeypatch.setattr(calls, "_record_many_async", write)

    async def run():
        tasks["gate"] = asyncio.Event()
        group = calls._GroupCommit()
        first = asyncio.ensure_future(group.submit("a"))
        await asyncio.sleep(0)  # "a" is being written
        tasks["b"] = asyncio.ensure_future(group.submit("b"))
        third = asyncio.ensure_future(group.submit("c"))
        await asyncio.sleep(0)  # "b" and "c" wait their turn
        tasks["gate"].set()
        await first
        await asyncio.wait_for(third, 5)
        for _ in range(10):
            await asyncio.sleep(0)
        return tasks["b"].cancelled(), group.busy

    cancelled, busy = asyncio.run(run())
    assert cancelled and not busy
    assert sorted(written) == ["a", "b", "c"]


def test_the_warm_round_trip_to_a_slow_redis_does_not_block_the_event_loop(
        gateway, setup, monkeypatch):
    """WarmCheck talks to Redis with redis.asyncio: while Redis does not answer, other
    coroutines (other streams) keep running; then the call falls back to the sync path."""
    require_shared_cache()
    from llmconn import rediscache

    assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                        ).status_code == 200  # the key is now known to this process

    async def run():
        import redis.asyncio

        server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        silent = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        monkeypatch.setattr(rediscache, "async_client_and_key", lambda key: (silent, key))
        check = gateway_planning.WarmCheck.start(f"Bearer {setup['key']}")
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.get_running_loop().create_task(tick())
        replies = await check.areplies()
        ticker.cancel()
        server.close()
        return check, replies, ticks

    check, replies, ticks = async_to_sync(run)()
    assert check is not None and replies is None  # Redis silent: the sync path decides
    assert ticks >= 20  # ~0.5 s of Redis silence, and the loop kept turning
