"""The usage spool: usage rows that cannot be written now are kept and written later, in order.

A call's usage row is written when the call ends (workspaces/calls.py). If the database does
not take it (down, restarting, a broken connection), the row is pushed here instead of being
dropped, and the call is answered as usual:

1. `push`: to a Redis list (`llmconn:usage-spool`, RPUSH) when Redis answers, else appended
   to `var/usage-spool/spool.jsonl` (LLMCONN_VAR_DIR; one JSON row per line, under an
   exclusive flock, fsync'ed). Budgets count the call in the cache as usual meanwhile.
2. `drain`: oldest first, the file's rows then the list's, in batches written with
   `usage_records_create(replay=True)` (ON CONFLICT DO NOTHING on request id + attempt, so a
   row written twice, e.g. its first write committed but its answer was lost, counts once).
   A batch leaves the spool only after it is committed: the file is renamed to a batch file
   and deleted after its rows are written; the list is trimmed by the number of rows written,
   under a Redis lock, in a WATCH/MULTI transaction that fails if the lock was lost meanwhile.
   A database error stops the drain with the rows still kept; a row the database refuses for
   its content is moved to `var/usage-spool/dead.jsonl` and logged, so it cannot block the rest.
3. Who drains: a thread of the process that spooled (every DRAIN_INTERVAL_SECONDS until the
   spool is empty, so rows are written within a second of the database coming back), the
   first write of each process (rows left by a process that died), and the Celery task
   `workspaces.usage_spool_drain` (beat, every minute; also before each budget reconcile).

Durability: the list is as durable as Redis is configured to be (AOF/RDB); the file survives a
crash of the process (fsync'ed). Rows spooled to the file on one host are drained by processes
of that host (the shared var/ of docker-compose's web service).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.utils import timezone

logger = logging.getLogger(__name__)

REDIS_KEY = "llmconn:usage-spool"
LOCK_KEY = "llmconn:usage-spool:lock"
LOCK_SECONDS = 60
BATCH = 500
DRAIN_INTERVAL_SECONDS = 0.5

_OUTAGE = (OperationalError, InterfaceError)


# --- where rows are kept ----------------------------------------------------------------------

def spool_dir() -> Path:
    return Path(settings.VAR_DIR) / "usage-spool"


_redis: dict[str, object] = {}
_redis_guard = threading.Lock()


def _client():
    """A Redis client with short timeouts (None without REDIS_URL)."""
    url = settings.REDIS_URL
    if not url:
        return None
    with _redis_guard:
        client = _redis.get(url)
        if client is None:
            import redis

            client = _redis[url] = redis.Redis.from_url(url, socket_connect_timeout=1,
                                                        socket_timeout=2)
        return client


def _line(row: dict) -> str:
    def plain(value):
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return json.dumps({k: plain(v) for k, v in row.items()}, separators=(",", ":"))


def push(rows: list[dict]) -> str:
    """Keep rows that could not be written; returns where they went ("redis" or "file").

    Raises only when neither Redis nor the file took them (the caller logs the rows)."""
    now = timezone.now()  # a row keeps the time of its call, not of its late write
    lines = [_line({**row, "created_at": row.get("created_at") or now}) for row in rows]
    client = _client()
    where = "file"
    if client is not None:
        try:
            client.rpush(REDIS_KEY, *lines)
            where = "redis"
        except Exception as exc:  # noqa: BLE001 - Redis down too: the file keeps them
            logger.warning("Usage spool: Redis unavailable (%s); %d usage row(s) kept in %s.",
                           exc.__class__.__name__, len(rows), spool_dir())
    if where == "file":
        _append(spool_dir() / "spool.jsonl", lines)
    _drainer.wake()
    return where


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _append(path: Path, lines: list[str]) -> None:
    """Append lines under an exclusive lock; a file renamed by a drain meanwhile is not
    written to (its inode no longer has the name): open the new one and try again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino != _inode(path):
                continue
            os.write(fd, data)
            os.fsync(fd)
            return
        finally:
            os.close(fd)


# --- how deep -----------------------------------------------------------------------------------

def _file_rows() -> int:
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    total = 0
    for path in [directory / "spool.jsonl", *directory.glob("batch-*.jsonl")]:
        try:
            with open(path, "rb") as fh:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
        except FileNotFoundError:
            continue
    return total


def depth() -> dict[str, int | None]:
    """Rows waiting: {"redis": n (None when Redis cannot be read or is not used), "file": n}."""
    redis_rows = None
    client = _client()
    if client is not None:
        try:
            redis_rows = int(client.llen(REDIS_KEY))
        except Exception:  # noqa: BLE001 - Redis down: unknown
            redis_rows = None
    return {"redis": redis_rows, "file": _file_rows()}


def depth_metrics():
    """The spool depth as Prometheus families, computed at each scrape of /metrics
    (registered by WorkspacesConfig.ready); a depth that cannot be read is left out."""
    from llmconn.metrics import usage_spool_depth

    try:
        state = depth()
    except Exception:  # noqa: BLE001 - a scrape never fails for the spool
        logger.warning("usage spool depth unreadable for /metrics", exc_info=False)
        state = {"redis": None, "file": None}
    return usage_spool_depth(state)


# --- writing them -------------------------------------------------------------------------------

def _write(rows: list[dict]) -> None:
    """Write spooled rows (idempotent). A database outage is raised (the rows stay kept); a
    row refused for its content goes to dead.jsonl instead of blocking the spool."""
    from . import services

    try:
        services.usage_records_create(rows=rows, replay=True)
    except _OUTAGE:
        close_broken_connections()
        raise
    except Exception:  # noqa: BLE001 - one bad row must not hold the others back
        if len(rows) > 1:
            for row in rows:
                _write([row])
            return
        logger.exception("Usage spool: a row the database refuses was moved to %s: %s",
                         spool_dir() / "dead.jsonl", _line(rows[0]))
        _append(spool_dir() / "dead.jsonl", [_line(rows[0])])


def _parse(raw: bytes | str, where: str) -> dict | None:
    try:
        row = json.loads(raw)
        return row if isinstance(row, dict) else None
    except ValueError:  # a line torn by a crash while it was written
        logger.warning("Usage spool: an unreadable line in %s was skipped.", where)
        return None


def _drain_file() -> int:
    directory = spool_dir()
    if not directory.is_dir():
        return 0
    written = 0
    lock_fd = os.open(directory / "drain.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another process is draining this directory
        spool = directory / "spool.jsonl"
        if _inode(spool) is not None and spool.stat().st_size:
            fd = os.open(spool, os.O_RDWR)
            try:  # taken under the writers' lock: no append is cut in half or lost
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.rename(spool, directory / f"batch-{time.time_ns():020d}.jsonl")
            finally:
                os.close(fd)
        for batch in sorted(directory.glob("batch-*.jsonl")):
            with open(batch, "rb") as fh:
                rows = [r for r in (_parse(line, batch.name) for line in fh if line.strip())
                        if r is not None]
            for start in range(0, len(rows), BATCH):
                _write(rows[start:start + BATCH])
            os.unlink(batch)
            written += len(rows)
    finally:
        os.close(lock_fd)
    return written


def _drain_redis() -> int:
    client = _client()
    if client is None:
        return 0
    import redis

    lock = client.lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
    try:
        if not lock.acquire():
            return 0  # another process is draining the list
    except redis.RedisError:
        return 0
    written = 0
    try:
        while True:
            items = client.lrange(REDIS_KEY, 0, BATCH - 1)
            if not items:
                break
            _write([r for r in (_parse(i, REDIS_KEY) for i in items) if r is not None])
            with client.pipeline() as pipe:
                pipe.watch(LOCK_KEY)
                if pipe.get(LOCK_KEY) != lock.local.token:
                    break  # the lock expired: whoever holds it now trims (rows written twice
                    #        count once)
                pipe.multi()
                pipe.ltrim(REDIS_KEY, len(items), -1)
                pipe.pexpire(LOCK_KEY, LOCK_SECONDS * 1000)
                pipe.execute()
            written += len(items)
    except redis.RedisError as exc:
        logger.warning("Usage spool: Redis failed while draining (%s); rows stay kept.",
                       exc.__class__.__name__)
    finally:
        try:
            lock.release()
        except redis.RedisError:  # expired or Redis gone: nothing to release
            pass
    return written


def drain() -> int:
    """Write every spooled row the database takes now, oldest first; returns how many.

    Raises OperationalError/InterfaceError when the database is (still) unavailable; the rows
    not yet written stay kept."""
    written = _drain_file() + _drain_redis()
    if written:
        logger.info("Usage spool: wrote %d usage row(s) kept while the database was "
                    "unavailable.", written)
    return written


def pending() -> bool:
    """Whether any row may still be waiting (an unreadable Redis counts as maybe)."""
    state = depth()
    return bool(state["file"]) or state["redis"] is None and _client() is not None \
        or bool(state["redis"])


def close_broken_connections() -> None:
    """Close this thread's usage and default connections after a database error, so the next
    use opens a fresh one (a pooled connection goes back to the pool, which discards it)."""
    for alias in ("usage", "default"):
        if alias in connections.databases:
            conn = connections[alias]
            if conn.connection is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - already broken; dropped either way
                    conn.connection = None


# --- the drainer thread of a process ------------------------------------------------------------

class _Drainer:
    """One thread per process that drains while anything is spooled, then exits."""

    def __init__(self):
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.checked_at_start = False

    def wake(self) -> None:
        with self._guard:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not ours
                self._pid, self._thread = os.getpid(), None
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="usage-spool-drainer",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            time.sleep(DRAIN_INTERVAL_SECONDS)
            try:
                drain()
                if not pending():
                    return
                failures = 0
            except _OUTAGE as exc:
                failures += 1
                if failures == 1:
                    logger.warning("Usage spool: database unavailable (%s); rows stay kept and "
                                   "are written when it answers.", exc.__class__.__name__)
            except Exception:  # noqa: BLE001 - keep trying; the rows are kept
                logger.exception("Usage spool: drain failed; rows stay kept.")
            finally:
                connections.close_all()


_drainer = _Drainer()


def check_once() -> None:
    """Called after a process's first usage write: drain rows another process left behind."""
    if not _drainer.checked_at_start:
        _drainer.checked_at_start = True
        _drainer.wake()
