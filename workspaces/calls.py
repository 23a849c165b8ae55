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
   when the first chunk arrived (providers.gateway.chat_stream raises before that), so a
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
from dataclasses import dataclass
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.core.cache import cache

from llmconn.errors import ApplicationError
from providers import gateway as provider_gateway
from providers.errors import RETRYABLE
from providers.gateway import ProviderCallError

from . import budgets, services
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
    first_call: dict | ProviderCallError | None = None  # litellm kwargs of candidates[0]
    revision: int | None = None


@dataclass
class Attempt:
    """One candidate being tried: which, its number (1 = the first tried), when it started."""

    resolved: Resolved
    number: int
    started: float


class CallFailed(Exception):
    """Every candidate tried failed (or a non-retryable failure stopped the chain)."""

    def __init__(self, error: ProviderCallError, attempt: Attempt):
        super().__init__(error.message)
        self.error, self.attempt = error, attempt


def plan_call(*, resolved: Resolved, api_key_id: int | None, endpoint: str,
              revision: int | None = None, with_call: bool = True) -> Plan:
    """Check the budgets and cool-downs of a resolved call and order its candidates (sync).

    Raises budgets.BudgetExceeded when the workspace's budget (or every candidate's
    connection budget) is used up. `with_call`: also build the first candidate's litellm
    arguments (may fetch an OAuth token), as a ProviderCallError if that fails.
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
                candidates=tuple(candidates), revision=revision)
    if with_call:
        plan.first_call = _call_kwargs(candidates[0])
    return plan


def _call_kwargs(resolved: Resolved) -> dict | ProviderCallError:
    try:
        return resolved.call_kwargs()
    except ApplicationError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the OAuth token endpoint failed
        return provider_gateway.classify(exc, label=label(resolved), host=resolved.host)


async def _acall_kwargs(resolved: Resolved) -> dict:
    try:
        return await resolved.acall_kwargs()
    except (ApplicationError, ProviderCallError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise provider_gateway.classify(exc, label=label(resolved), host=resolved.host) from None


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
                if isinstance(plan.first_call, ProviderCallError):
                    raise plan.first_call
                call = plan.first_call
            else:
                call = await _acall_kwargs(resolved)
            result = await invoke(resolved, call)
        except ProviderCallError as err:
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
    return provider_gateway.cost(model=resolved.litellm_model, input_tokens=input_tokens,
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
                 output_tokens: int, cost: Decimal | None) -> None:
    if input_tokens or output_tokens:
        budgets.add_usage(workspace_id=plan.workspace_id, connection_id=resolved.connection_id,
                          input_tokens=input_tokens, output_tokens=output_tokens, cost=cost,
                          revision=plan.revision)
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
            attempt=current.number, usage_source=kw.get("usage_source", "provider")))
    try:
        services.usage_records_create(rows=rows)
    except Exception:  # noqa: BLE001 - a lost usage row must not fail the call
        logger.exception("Could not record usage for %d call(s) of workspace(s) %s", len(rows),
                         sorted({c.resolved.workspace_slug for _, c, _ in items}))
    for (plan, current, kw), cost in zip(items, costs, strict=True):
        _after_usage(plan, current.resolved, error_class=kw["error_class"],
                     input_tokens=kw["input_tokens"], output_tokens=kw["output_tokens"],
                     cost=cost)


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
    item = (plan, current, {
        "stream": stream, "status": status, "error_class": error_class,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "usage_source": usage_source,
        "latency_ms": int((time.perf_counter() - current.started) * 1000)})
    loop = asyncio.get_running_loop()
    writer = _WRITERS.get(loop)
    if writer is None:
        writer = _WRITERS[loop] = _GroupCommit()
    await writer.submit(item)
