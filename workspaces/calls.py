"""How one model call is made through a workspace: budgets, fallbacks, cool-down, usage.

Shared by the /v1 gateway (gateway.py) and the Python client (client.py):

1. `plan_call` (sync, no database query when warm): the candidates are the binding's
   connection then its fallbacks (resolution.Resolved.chain). A workspace budget that is used
   up refuses the call (budgets.BudgetExceeded, a 429); a connection whose own budget is used
   up is skipped (all used up: 429 naming the first). Connections in cool-down are moved to
   the end (tried only when every other candidate failed). One cache round trip reads the
   budget counters and the cool-down flags; none at all when there are no budgets and no
   fallbacks.
2. `attempt`: tries the candidates in order. A retryable failure (rate limited, timeout,
   unreachable, provider 5xx: providers.errors.RETRYABLE) moves on to the next candidate; any
   other failure (auth, bad request, model not found, blocked) is answered at once, because it
   would fail the same way elsewhere or is the caller's to fix. For streams the attempt ends
   when the first chunk arrived (providers.forward.chat_stream raises before that), so a
   stream falls back only before its first byte reached the client; a failure after that is
   reported in the stream, never retried.
3. `record`: one UsageRecord per connection reached (errors against the connection that
   failed, `attempt` numbering them), the budget counters, and the cool-down bookkeeping:
   COOLDOWN_FAILURES retryable failures of a connection within COOLDOWN_WINDOW_SECONDS put it
   in cool-down for COOLDOWN_SECONDS, in every process (flags in the shared cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.utils import timezone

from llmconn import metrics
from llmconn.errors import ApplicationError
from llmconn.outage import is_database_outage
from llmconn.tracing import current_request_id, new_request_id
from providers import forward as provider_forward
from providers.errors import RETRYABLE
from providers.errors import ProviderError

from . import budgets, services, usage_spool
from .constants import COOLDOWN_FAILURES, COOLDOWN_SECONDS, COOLDOWN_WINDOW_SECONDS
from .resolution import Resolved

logger = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)


def cooldown_key(connection_id: str) -> str:
    return f"llmconn:cooldown:{connection_id}"


def _failures_key(connection_id: str) -> str:
    return f"llmconn:failures:{connection_id}"


def label(resolved: Resolved) -> str:
    """How provider error messages name the connection."""
    return f"{resolved.provider_label}, connection {resolved.connection_name!r}"


@dataclass
class Plan:
    """The candidates of one call, in the order they will be tried."""

    workspace_id: int
    api_key_id: int | None
    endpoint: str  # "chat" | "embeddings"
    candidates: tuple[Resolved, ...]
    first_call: dict | ProviderError | None = None  # litellm kwargs of candidates[0]
    revision: int | None = None
    user_id: int | None = None  # who called (usage group_by=user)
    # The call's x-request-id (llmconn.tracing), on each of its usage rows; made here when no
    # request set one (the Python client), so every row can be written again idempotently.
    request_id: str = field(default_factory=lambda: current_request_id() or new_request_id())


@dataclass
class Attempt:
    """One candidate being tried: which, its number (1 = the first tried), when it started."""

    resolved: Resolved
    number: int
    started: float
    answered: float | None = None  # when the provider answered (a stream: its first chunk)


class CallFailed(Exception):
    """Every candidate tried failed (or a non-retryable failure stopped the chain)."""

    def __init__(self, error: ProviderError, attempt: Attempt):
        super().__init__(error.message)
        self.error, self.attempt = error, attempt


def plan_call(*, resolved: Resolved, api_key_id: int | None, endpoint: str,
              revision: int | None = None, with_call: bool = True,
              user_id: int | None = None) -> Plan:
    """Check the budgets and cool-downs of a resolved call and order its candidates (sync).

    Raises budgets.BudgetExceeded when the workspace's budget (or every candidate's
    connection budget) is used up. `with_call`: also build the first candidate's litellm
    arguments (may fetch an OAuth token), as a ProviderError if that fails.
    """
    chain = resolved.chain
    states = budgets.budgets_for(workspace_id=resolved.workspace_id,
                                 connection_ids=[c.connection_id for c in chain],
                                 revision=revision)
    cool_keys = [cooldown_key(c.connection_id) for c in chain] if len(chain) > 1 else []
    candidates = list(chain)
    if states or cool_keys:
        try:
            spent, flags = budgets.read(states, cool_keys)
        except Exception:  # noqa: BLE001 - cache down: no budgets, no cool-down
            logger.warning("Budgets and cool-downs unreadable (cache down?): not enforced.")
            spent, flags = {}, {}
        blocked: dict[str, budgets.BudgetExceeded] = {}
        for state in states:
            refusal = budgets.exceeded(state, spent.get(state.id, 0))
            if refusal is None:
                continue
            if state.scope == "workspace":
                raise refusal
            blocked.setdefault(state.target_id, refusal)
        if blocked:
            candidates = [c for c in chain if c.connection_id not in blocked]
            if not candidates:
                raise blocked[chain[0].connection_id] if chain[0].connection_id in blocked \
                    else next(iter(blocked.values()))
        if flags:
            warm = [c for c in candidates if not flags.get(cooldown_key(c.connection_id))]
            candidates = warm + [c for c in candidates if all(c is not w for w in warm)]
    plan = Plan(workspace_id=resolved.workspace_id, api_key_id=api_key_id, endpoint=endpoint,
                candidates=tuple(candidates), revision=revision, user_id=user_id)
    if with_call:
        plan.first_call = _call_kwargs(candidates[0])
    return plan


def _call_kwargs(resolved: Resolved) -> dict | ProviderError:
    try:
        return resolved.call_kwargs()
    except ApplicationError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the OAuth token endpoint failed
        return provider_forward.classify(exc, label=label(resolved), host=resolved.host)


async def _acall_kwargs(resolved: Resolved) -> dict:
    try:
        return await resolved.acall_kwargs()
    except ApplicationError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise provider_forward.classify(exc, label=label(resolved), host=resolved.host) from None


async def _invoke_refreshing(invoke, resolved: Resolved, call: dict):
    """`invoke(resolved, call)`; when the provider refuses an OAuth token (revoked or expired
    early), drop it, fetch a new one and retry once (contract: "Time" / OAuth)."""
    from providers.errors import AUTH
    from providers.oauth import adrop_token

    try:
        return await invoke(resolved, call)
    except ProviderError as err:
        if err.error_class != AUTH or not await adrop_token(
                provider=resolved.provider, auth_method=resolved.auth_method,
                config=resolved.config, secrets=resolved.secrets):
            raise
    return await invoke(resolved, await _acall_kwargs(resolved))


async def attempt(plan: Plan, invoke: Callable[[Resolved, dict], Awaitable], *,
                  stream: bool = False):
    """Call `invoke(resolved, litellm kwargs)` on each candidate until one answers.

    Returns (result, Attempt). Failures are recorded as they happen; raises CallFailed with
    the last error when no candidate answered.
    """
    last = len(plan.candidates) - 1
    failed: CallFailed | None = None
    for index, resolved in enumerate(plan.candidates):
        current = Attempt(resolved, index + 1, time.perf_counter())
        try:
            if index == 0 and plan.first_call is not None:
                if isinstance(plan.first_call, ProviderError):
                    raise plan.first_call
                call = plan.first_call
            else:
                call = await _acall_kwargs(resolved)
            result = await _invoke_refreshing(invoke, resolved, call)
            current.answered = time.perf_counter()
        except ProviderError as err:
            await record(plan, current, stream=stream, status=err.status,
                         error_class=err.error_class)
            if err.error_class not in RETRYABLE or index == last:
                raise CallFailed(err, current) from None
            failed = CallFailed(err, current)
            logger.info("Workspace call on connection %r failed (%s); trying fallback %r.",
                        resolved.connection_name, err.error_class,
                        plan.candidates[index + 1].connection_name)
            continue
        except ApplicationError as exc:
            if failed is None:
                raise
            # A fallback that cannot be called now: the previous failure stands.
            logger.warning("Fallback %r skipped: %s", resolved.connection_name, exc.message)
            if index == last:
                raise failed from None
            continue
        return result, current
    raise AssertionError("a plan has at least one candidate")


def cost_of(resolved: Resolved, input_tokens: int, output_tokens: int) -> Decimal | None:
    """A call's cost: the connection's price override if it has one, else litellm's table."""
    if not input_tokens and not output_tokens:
        return None
    if resolved.input_cost_per_million is not None or resolved.output_cost_per_million is not None:
        return (Decimal(input_tokens) * (resolved.input_cost_per_million or 0)
                + Decimal(output_tokens) * (resolved.output_cost_per_million or 0)) / _MILLION
    return provider_forward.cost(model=resolved.litellm_model, input_tokens=input_tokens,
                                 output_tokens=output_tokens)


def note_failure(connection_id: str) -> bool:
    """Count a retryable failure of a connection; True when it now enters cool-down."""
    key = _failures_key(connection_id)
    try:
        cache.add(key, 0, timeout=COOLDOWN_WINDOW_SECONDS)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=COOLDOWN_WINDOW_SECONDS)
            count = 1
        if count >= COOLDOWN_FAILURES:
            cache.set(cooldown_key(connection_id), 1, timeout=COOLDOWN_SECONDS)
            cache.delete(key)
            return True
    except Exception:  # noqa: BLE001 - cache down: no cool-down
        logger.warning("Could not count a failure of connection %s (cache down?).",
                       connection_id)
    return False


def _after_usage(plan: Plan, resolved: Resolved, *, error_class: str, input_tokens: int,
                 output_tokens: int, cost: Decimal | None, recorded: bool = True) -> None:
    if input_tokens or output_tokens:
        budgets.add_usage(workspace_id=plan.workspace_id, connection_id=resolved.connection_id,
                          input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
                          revision=plan.revision, recorded=recorded)
    if error_class in RETRYABLE and note_failure(resolved.connection_id):
        logger.warning("Connection %r failed %s times within %ss: skipped for %ss where it has "
                       "a fallback.", resolved.connection_name, COOLDOWN_FAILURES,
                       COOLDOWN_WINDOW_SECONDS, COOLDOWN_SECONDS)


def _record_many_sync(items: list[tuple[Plan, Attempt, dict]]) -> None:
    """Write the UsageRecords of several attempts in one transaction, then count each in the
    budgets and cool-downs (in that order, as for one: a rebuilt counter includes its row)."""
    rows, costs = [], []
    for plan, current, kw in items:
        resolved = current.resolved
        cost = cost_of(resolved, kw["input_tokens"], kw["output_tokens"])
        costs.append(cost)
        rows.append(dict(
            workspace_id=plan.workspace_id, connection_id=resolved.connection_id,
            api_key_id=plan.api_key_id, role=resolved.role, model=resolved.model,
            endpoint=plan.endpoint, stream=kw["stream"], status_code=kw["status"],
            error_class=kw["error_class"], input_tokens=kw["input_tokens"],
            output_tokens=kw["output_tokens"], cost=cost, latency_ms=kw["latency_ms"],
            attempt=current.number, user_id=plan.user_id or resolved.user_id,
            workspace_name=resolved.workspace_name, connection_name=resolved.connection_name,
            request_id=plan.request_id, created_at=kw["at"],
            usage_source=kw.get("usage_source", "provider")))
    recorded = _write_or_spool(rows)
    if recorded:
        try:
            services.connection_touch(connection_ids=[r["connection_id"] for r in rows])
        except Exception:  # noqa: BLE001 - last_used_at is a hint; the call is answered anyway
            logger.warning("Could not update connections' last_used_at.", exc_info=True)
    for (plan, current, kw), cost in zip(items, costs, strict=True):
        try:
            _after_usage(plan, current.resolved, error_class=kw["error_class"],
                         input_tokens=kw["input_tokens"], output_tokens=kw["output_tokens"],
                         cost=cost, recorded=recorded)
        except Exception as exc:  # noqa: BLE001 - the call was made: it is answered anyway
            if not is_database_outage(exc):
                raise
            logger.warning("Budget counters not updated for a call (database unavailable: "
                           "%s); the reconcile job counts it from its usage row.",
                           exc.__class__.__name__)


SPOOL_LOG_INTERVAL_SECONDS = 5.0
_SPOOLED = [0, 0.0]  # rows spooled since the last log line, when it was written


def _write_or_spool(rows: list[dict]) -> bool:
    """Write usage rows now (True), or keep them in the spool (workspaces/usage_spool.py) to
    be written once the database answers (False): a usage row is never dropped, and the call is
    answered either way."""
    try:
        services.usage_records_create(rows=rows)
    except Exception as exc:  # noqa: BLE001 - kept, not lost; the call goes on
        if is_database_outage(exc):
            usage_spool.close_broken_connections()
        else:
            logger.exception("Could not write %d usage row(s); keeping them in the spool.",
                             len(rows))
        try:
            where = usage_spool.push(rows)
        except Exception:  # noqa: BLE001 - nowhere to keep them: say which in the log
            logger.exception("Usage rows could not be written nor spooled: %s",
                             [usage_spool._line(row) for row in rows])
            return False
        _SPOOLED[0] += len(rows)
        now = time.monotonic()
        if now - _SPOOLED[1] >= SPOOL_LOG_INTERVAL_SECONDS:  # one line per interval, not per row
            logger.warning("Database unavailable (%s): %d usage row(s) kept in the spool (%s) "
                           "to be written when it answers.", exc.__class__.__name__,
                           _SPOOLED[0], where)
            _SPOOLED[:] = [0, now]
        return False
    usage_spool.check_once()
    return True


_record_many_async = sync_to_async(_record_many_sync)

MAX_GROUP = 256  # usage rows per group commit


class _GroupCommit:
    """Group commit of usage rows, per event loop.

    A call's `record` returns once its row is committed (usage totals are exact the moment a
    response is sent, as before), but concurrent calls share one hand-off to the sync thread
    and one transaction: the first caller writes its row with every row queued so far; rows
    that arrive meanwhile wait and are written by the next writer (the first of them). Alone,
    a call writes its row at once: no timer, no added latency. No background task: each batch
    is written by a request that is waiting for it, in that request's context (so it runs on
    the sync thread and database connection that request would have used).
    """

    def __init__(self):
        self.busy = False
        self.pending: list[tuple[tuple, asyncio.Future]] = []

    async def submit(self, item: tuple) -> None:
        if self.busy:
            waiter = asyncio.get_running_loop().create_future()
            self.pending.append((item, waiter))
            try:
                if not await waiter:  # False: written; True: our turn to write (item taken out)
                    return
            except asyncio.CancelledError:
                if waiter.cancelled() or not waiter.result():
                    raise  # still queued (the writer takes it) or already written
                # Cancelled just as the turn came to us: someone else must write our row and
                # the ones queued after it.
                self.busy = False
                asyncio.ensure_future(self.submit(item))
                raise
        self.busy = True
        batch: list[tuple[tuple, asyncio.Future | None]] = [(item, None)]
        try:
            while True:
                take = self.pending[:MAX_GROUP - len(batch)]
                del self.pending[:len(take)]
                batch += take
                try:
                    await _record_many_async([i for i, _ in batch])
                finally:
                    for _, waiter in batch:
                        if waiter is not None and not waiter.done():
                            waiter.set_result(False)
                # Rows whose caller went away (cancelled) are written here; otherwise the
                # first caller still waiting writes the next batch.
                if not self.pending or any(not w.done() for _, w in self.pending):
                    break
                batch = []
        finally:
            nxt = next((p for p in self.pending if not p[1].done()), None)
            if nxt is not None:
                self.pending.remove(nxt)
                nxt[1].set_result(True)  # stays busy: that caller writes next
            else:
                self.busy = False


_WRITERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def record(plan: Plan, current: Attempt, *, stream: bool, status: int,
                 error_class: str = "", input_tokens: int = 0, output_tokens: int = 0,
                 usage_source: str = "provider") -> None:
    """Record one attempt: its UsageRecord, budget counters and cool-down count (returns once
    they are written; concurrent calls are written together, see _GroupCommit).
    `usage_source`: "estimated" when the tokens are llmconn's count (usage.estimate)."""
    metrics.observe_attempt(current.resolved, started=current.started, answered=current.answered,
                            status=status, error_class=error_class, stream=stream,
                            input_tokens=input_tokens, output_tokens=output_tokens,
                            cost=cost_of(current.resolved, input_tokens, output_tokens))
    item = (plan, current, {
        "stream": stream, "status": status, "error_class": error_class,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "usage_source": usage_source,
        "latency_ms": int((time.perf_counter() - current.started) * 1000),
        "at": timezone.now()})
    loop = asyncio.get_running_loop()
    writer = _WRITERS.get(loop)
    if writer is None:
        writer = _WRITERS[loop] = _GroupCommit()
    await writer.submit(item)
