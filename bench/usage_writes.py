"""How usage rows are written: group commit (workspaces/calls.py _GroupCommit) against one
hand-off and one INSERT per call, in-process on PostgreSQL (no HTTP, no provider).

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python bench/usage_writes.py [--seconds 3] [--concurrency 1 32]

Each of C asyncio workers calls `calls.record` in a loop (what a /v1 call does at its end) for
the given seconds; prints rows/s and the median time of one record per mode. The bench
database's usage rows are deleted first and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmconn.settings")
os.environ.setdefault("DATABASE_URL", os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench"))
os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("FERNET_KEYS", "bench-fernet-key")
os.environ.setdefault("LLMCONN_EGRESS_ALLOW", "127.0.0.0/8")
os.environ.setdefault("AUDIT_HMAC_KEY", "bench-audit-hmac-key-not-for-production")
os.environ.pop("REDIS_URL", None)  # local-memory cache: only the usage write is measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()

    import django

    django.setup()
    from asgiref.sync import sync_to_async
    from django.core.management import call_command

    from connections.services import connection_create
    from workspaces import calls, services
    from workspaces.models import UsageRecord, Workspace
    from workspaces.resolution import current_revision, resolve

    sys.setswitchinterval(0.0005)  # as llmconn/asgi.py sets it in web processes

    call_command("migrate", verbosity=0)
    ws = Workspace.objects.filter(slug="usage-bench").first()
    if ws is None:
        conn = connection_create(name="usage-bench", provider="openai_compatible",
                                 auth_method="api_key", base_url="http://127.0.0.1:9/v1",
                                 default_model="m", credentials={"api_key": "sk-bench-0000"})
        ws = services.workspace_create(name="usage-bench",
                                       bindings={"chat": {"connection": str(conn.pk)}})
    revision = current_revision()  # as a warm call's plan has it: budgets from memory
    resolved = resolve(workspace_id=ws.pk, role="chat", revision=revision)
    UsageRecord.objects.filter(workspace=ws).delete()

    async def direct(plan, current, **kw):  # one hand-off and one INSERT per call
        item = (plan, current, {"stream": False, "status": 200, "error_class": "",
                                "input_tokens": 1, "output_tokens": 1, "latency_ms": 1,
                                "at": calls.timezone.now()})
        await sync_to_async(calls._record_many_sync)([item])

    async def run(record, concurrency: int) -> tuple[float, float]:
        stop = time.perf_counter() + args.seconds
        took: list[float] = []

        async def worker():
            while time.perf_counter() < stop:
                plan = calls.Plan(workspace_id=ws.pk, api_key_id=None, endpoint="chat",
                                  candidates=(resolved,), revision=revision)
                t0 = time.perf_counter()
                await record(plan, calls.Attempt(resolved, 1, t0), stream=False, status=200,
                             input_tokens=1, output_tokens=1)
                took.append(time.perf_counter() - t0)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return len(took) / args.seconds, statistics.median(took) * 1000

    print(f"load average {os.getloadavg()[0]:.2f}; {args.seconds:.0f} s per run")
    # One row written alone, sync: bulk_create (BEGIN, INSERT, COMMIT: Django wraps it in a
    # transaction) against the same INSERT sent alone in autocommit (QuerySet._insert, the
    # private step bulk_create calls: one round trip) and Model.save(force_insert=True) (one
    # INSERT in autocommit too: save() opens no transaction for a model without parents).
    row = dict(workspace_id=ws.pk, connection_id=None, api_key_id=None, role="chat",
               model="m", endpoint="chat", stream=False, status_code=200, input_tokens=1)
    manager = UsageRecord.objects.using("usage")
    fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]

    def one_statement():
        manager._insert([services._usage_record(**row)], fields=fields, using="usage")

    def bulk():
        manager.bulk_create([services._usage_record(**row)])

    def save():
        services._usage_record(**row).save(using="usage", force_insert=True)

    for name, write in (("service", lambda: services.usage_records_create(rows=[row])),
                        ("bulk_create", bulk), ("one INSERT", one_statement),
                        ("save()", save)):
        took = []
        for _ in range(300):
            t0 = time.perf_counter()
            write()
            took.append(time.perf_counter() - t0)
        print(f"one row alone, {name:<11} p50 {statistics.median(took) * 1000:6.2f} ms")
    for concurrency in args.concurrency:
        for name, record in (("group commit", calls.record), ("one per call", direct)):
            rate, p50 = asyncio.run(run(record, concurrency))
            print(f"c={concurrency:<3} {name:<13} {rate:8.0f} rows/s   p50 {p50:6.2f} ms")
    UsageRecord.objects.filter(workspace=ws).delete()


if __name__ == "__main__":
    main()
