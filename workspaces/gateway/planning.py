"""Step 2 of a /v1 call: from a checked request to a calls.Plan, or a refusal.

`plan_request` starts the warm path's Redis round trip (WarmCheck) before the body is parsed,
then authenticates the API key, counts the key's throttle, resolves `model` to the bound
connection(s) (resolution.py), checks budgets and plans the call (calls.plan_call). On the
warm path (`_context_warm`: key, resolution and budgets known to this process, their cache
versions current) all of it runs on the event loop; otherwise `_context` runs on the sync
thread, where it may query the database or fetch an OAuth token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from asgiref.sync import sync_to_async

from llmconn.throttling import gateway_key_wait
from providers.errors import ProviderError

from .. import calls, services
from ..keys import KeyIdentity, authenticate_key, bearer_token
from ..resolution import ROLES, Resolved, current_revision, resolve_model
from .errors import REFUSALS, GatewayError, GatewayThrottled, _refusal_response

logger = logging.getLogger("workspaces.gateway")

async def plan_request(request, parse, endpoint: str):
    """(what `parse(request)` returned, Plan) of a gateway call, or the JsonResponse refusing it.

    The warm path's Redis round trip (WarmCheck) is sent first and read once the body is
    checked, so the two overlap."""
    authorization = request.headers.get("Authorization")
    check = WarmCheck.start(authorization)
    try:
        parsed = parse(request)
    except BaseException as exc:
        if check is not None:
            await check.discard()
        if isinstance(exc, GatewayError):
            return exc.response()
        raise
    body = parsed[0] if isinstance(parsed, tuple) else parsed
    model = body["model"].strip()
    if endpoint == "embeddings" and model in ROLES:
        model = "embedding"  # a role name on /v1/embeddings means the embedding role
    try:
        _identity, plan = await _context_async(authorization, model, endpoint, check)
        if endpoint == "embeddings":
            plan = embeddings_capable(plan)
    except REFUSALS as exc:
        return _refusal_response(exc)
    return parsed, plan


def _can_embed(resolved: Resolved) -> bool:
    from providers.base import EMBEDDINGS, find_provider

    spec = find_provider(resolved.provider)
    return spec is not None and EMBEDDINGS in spec.capabilities


def embeddings_capable(plan: calls.Plan) -> calls.Plan:
    """The plan without candidates whose provider has no embeddings endpoint (a 400 when none
    is left): embedding calls go only to connections with the embeddings capability."""
    capable = tuple(c for c in plan.candidates if _can_embed(c))
    if len(capable) == len(plan.candidates):
        return plan
    if not capable:
        first = plan.candidates[0]
        raise GatewayError(
            400, f"The connection {first.connection_name!r} ({first.provider_label}) has no "
            "embeddings endpoint: bind an embeddings-capable connection to the workspace's "
            "`embedding` role.", code="unsupported_endpoint", param="model")
    first_call = plan.first_call if capable[0] is plan.candidates[0] else None
    return dataclasses.replace(plan, candidates=capable, first_call=first_call)


def _context(authorization: str | None, model: str, endpoint: str,
             counted: tuple[int, float | None] | None = None, known: dict | None = None
             ) -> tuple[KeyIdentity, calls.Plan]:
    """Authenticate, resolve, check budgets and plan the call (sync: may query the database,
    fetch an OAuth token). `counted`: (key id, wait) when the warm path already counted this
    call in that key's throttle (not counted twice); `known`: the scope versions its round
    trip read at the start of the call (not read again)."""
    raw = bearer_token(authorization)
    revision = current_revision(*_scopes_of(raw), known=known)
    if raw is None:
        raise GatewayError(401, "Missing API key: send `Authorization: Bearer lck_...` with a "
                           "workspace API key.", code="missing_api_key")
    identity = authenticate_key(raw, revision=revision)
    if identity is None:
        raise GatewayError(401, "Invalid or revoked API key.", code="invalid_api_key")
    services.api_key_touch_later(api_key_id=identity.key_id)
    services.api_key_touch_flush(if_due=True)
    if counted is not None and counted[0] == identity.key_id:
        wait = counted[1]
    else:
        wait = gateway_key_wait(identity.key_id)
    if wait is not None:
        raise GatewayThrottled(wait)  # 429 + Retry-After past LLMCONN_THROTTLE_GATEWAY
    resolved = resolve_model(workspace_id=identity.scope_id, model=model,
                             endpoint=endpoint, revision=revision)
    plan = calls.plan_call(resolved=resolved, api_key_id=identity.key_id, endpoint=endpoint,
                           revision=revision, user_id=identity.user_id)
    return identity, plan


def _scopes_of(raw_key: str | None) -> list[str]:
    """The cache scopes a call with this key will check (read in the call's first round trip):
    the key's, and those of its workspace's cached resolutions when the key is known."""
    from llmconn import versions

    from ..keys import cached_identity
    from ..resolution import cached_scopes
    from ..services import hash_api_key

    if not raw_key or len(raw_key) > 200:
        return []
    hit = cached_identity(raw_key)
    if hit is None:
        return [versions.key(hash_api_key(raw_key))]
    return [*(s for s, _ in hit[0]), *cached_scopes(hit[1].scope_id)]


_context_sync = sync_to_async(_context)


async def _context_async(authorization: str | None, model: str, endpoint: str,
                         check: WarmCheck | None = None) -> tuple[KeyIdentity, calls.Plan]:
    """`_context`, on the event loop when everything it needs is in this process's memory
    (`_context_warm`, with the round trip `check` already sent if given), else on the sync
    thread."""
    if check is not None:
        await check.areplies()
    warm = _context_warm(authorization, model, endpoint, check)
    if isinstance(warm, tuple) and len(warm) == 2 and isinstance(warm[1], calls.Plan):
        plan = warm[1]
        services.api_key_touch_later(api_key_id=warm[0].key_id)
        if services.api_key_touch_pending():
            _schedule_touch_flush()
        # As plan_call(with_call=True), without blocking (an OAuth token is fetched async).
        try:
            plan.first_call = await calls._acall_kwargs(plan.candidates[0])
        except ProviderError as err:
            plan.first_call = err
        return warm
    try:
        return await _context_sync(authorization, model, endpoint, warm,
                                   check.versions() if check is not None else None)
    finally:
        if services.api_key_touch_pending():
            _schedule_touch_flush()


_TOUCH_FLUSHES: set = set()  # (references to the running flush tasks)


def _schedule_touch_flush() -> None:
    """Write the last-used times queued by calls in a second, in one UPDATE on the sync thread,
    without holding any call up (one pending flush at a time)."""
    if _TOUCH_FLUSHES:
        return

    async def flush():
        await asyncio.sleep(1.0)
        try:
            await sync_to_async(services.api_key_touch_flush)()
        except Exception:  # noqa: BLE001 - a last-used time is not worth an error
            logger.warning("Could not write API keys' last-used times.", exc_info=True)

    task = asyncio.get_running_loop().create_task(flush())
    _TOUCH_FLUSHES.add(task)
    task.add_done_callback(_TOUCH_FLUSHES.discard)


class WarmCheck:
    """The warm path's one Redis round trip, started before the request body is parsed.

    When this process already knows a request's API key, the versions of the cache scopes its
    cached key and resolutions depend on (one MGET, llmconn.versions) and the key's throttle
    count are asked for as soon as the view starts (`start` schedules the round trip on the
    event loop with redis.asyncio), and the replies are awaited once the body is checked
    (`areplies`): the round trip overlaps that work instead of adding to it, and a slow Redis
    never blocks the event loop (other streams keep flowing). Nothing goes to a provider
    before the replies are read, so an edit, a revoked key or a throttled key still takes
    effect on the very next call. A request refused for its body is not counted (`discard`
    takes its throttle count back), as on the cold path, where the throttle is counted only
    for a call that is going to be made. The throttle's commands are llmconn.throttling's
    (`window_commands`); any Redis trouble makes the replies None and the call takes the sync
    path, which knows what to do.
    """

    __slots__ = ("hit", "window", "scopes", "_client", "_throttle_key", "_task", "_replies")

    def __init__(self, hit, window, client, throttle_key, task, scopes=()):
        self.hit, self.window, self._client = hit, window, client
        self._throttle_key, self._task = throttle_key, task
        self.scopes = scopes
        self._replies: list | None = None

    @classmethod
    def start(cls, authorization: str | None) -> WarmCheck | None:
        """Start the round trip for a key this process knows; None when the call cannot take
        the warm path anyway (unknown key, no Redis). A last-used write due is queued
        (services.api_key_touch_later), not a reason to leave the warm path."""
        from llmconn import versions
        from llmconn.rediscache import async_client_and_key
        from llmconn.throttling import gateway_window, window_commands

        from ..keys import cached_identity
        from ..resolution import BASE_SCOPES, cached_scopes

        hit = cached_identity(bearer_token(authorization))
        if hit is None:
            return None
        # The base scopes too: a call that falls back to the sync path then starts from these
        # replies and reads nothing again before its queries (resolution.current_revision).
        scopes = list(dict.fromkeys([*BASE_SCOPES, *(s for s, _ in hit[0]),
                                     *cached_scopes(hit[1].scope_id)]))
        try:
            client, _ = async_client_and_key(versions.GLOBAL)
            _, version_keys = versions.full_keys(scopes)
        except Exception:  # noqa: BLE001 - Redis trouble: the sync path knows what to do
            return None
        if client is None or version_keys is None:
            return None
        window = gateway_window(hit[1].key_id)
        commands: list[tuple] = [("MGET", *version_keys)]
        throttle_key = None
        if window is not None:
            _, throttle_key = async_client_and_key(window[0])
            commands += window_commands(throttle_key, window[1])

        async def round_trip():
            # One connection, the commands sent as one packet and their replies read: half
            # the CPU of redis.asyncio's pipeline object, which matters on every call.
            pool = client.connection_pool
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(conn.pack_commands(commands))
                return [await conn.read_response() for _ in commands]
            except BaseException:
                await conn.disconnect()  # (replies left unread: never back in use as is)
                raise
            finally:
                await pool.release(conn)

        task = asyncio.get_running_loop().create_task(round_trip())
        return cls(hit, window, client, throttle_key, task, scopes)

    async def areplies(self) -> list | None:
        """[[version of each scope], (throttle replies...)]; None when Redis failed."""
        task, self._task = self._task, None
        if task is not None:
            try:
                self._replies = list(await task)
            except Exception:  # noqa: BLE001
                self._replies = None
        return self._replies

    def versions(self) -> dict | None:
        """{scope: version or None} of the MGET `areplies` read (None when Redis failed)."""
        if self._replies is None:
            return None
        return {s: None if v is None else int(v)
                for s, v in zip(self.scopes, self._replies[0], strict=True)}

    def replies(self) -> list | None:
        """The replies `areplies` read (None before, or when Redis failed)."""
        return self._replies

    async def discard(self) -> None:
        """The request was refused before its call was planned: take the count back."""
        if await self.areplies() is not None and self._throttle_key is not None:
            try:
                await self._client.decr(self._throttle_key)
            except Exception:  # noqa: BLE001 - one call too many counted, at worst
                pass


def _context_warm(authorization: str | None, model: str, endpoint: str,
                  check: WarmCheck | None = None):
    """The warm path of `_context`, run on the event loop without a hand-off to the sync thread.

    Taken when this process already knows the API key and the resolution (with the versions
    of the scopes they depend on), and there are no budgets and no fallbacks for the call
    (their counters and cool-down flags are read by the sync path). Then the whole call
    costs one Redis round trip (`check`, a WarmCheck the view sent before it parsed the
    body; None for a call this process cannot take warm). An entry whose versions moved is
    not used (same rule as the sync path: an edit takes effect on the next call). Returns
    (identity, Plan) when the call can go on; None to take the sync path; (key id, wait) to
    take it with the throttle already counted. Raises the same errors `_context` would for the
    same state.
    """
    from llmconn.versions import Versions

    from ..budgets import cached_budgets
    from ..resolution import resolve_model_cached

    if check is None:  # (the view's WarmCheck.start found nothing to check: a cold call)
        return None
    key_deps, identity = check.hit
    window = check.window
    replies = check.replies()
    if replies is None:
        return None
    wait = None
    if window is not None and int(replies[2]) > window[2]:
        wait = max(1.0, window[3] - time.time())
    counted = (identity.key_id, wait) if window is not None else None
    revision = Versions(check.versions(), frozen=True)
    if not revision.current(key_deps):
        return counted
    if wait is not None:
        raise GatewayThrottled(wait)
    resolved = resolve_model_cached(workspace_id=identity.scope_id, model=model,
                                    endpoint=endpoint, revision=revision)
    if resolved is None or resolved.fallback_chain:
        return counted
    budgets = cached_budgets(revision)
    if budgets is None:
        return counted
    if budgets and (budgets.get(("workspace", str(identity.scope_id)))
                    or budgets.get(("connection", resolved.connection_id))):
        return counted
    return identity, calls.Plan(workspace_id=resolved.workspace_id, api_key_id=identity.key_id,
                                endpoint=endpoint, candidates=(resolved,), revision=revision,
                                user_id=identity.user_id)
