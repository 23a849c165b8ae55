"""Benchmark: how long the health sweep's engine takes to test N connections.

Starts the project's fake upstream (tests/upstream.py) on 127.0.0.1, or uses --url, then tests
N connection settings against it with providers.checks.test_many (one event loop, bounded
concurrency: what connection_health_sweep and test_connections run), and prints the time.
Nothing is written to the database.

    .venv/bin/python bench/sweep.py --connections 300 --concurrency 50 [--delay-ms 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmconn.test_settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="make the upstream answer this slowly (simulated provider latency)")
    args = parser.parse_args()

    import django

    django.setup()
    from providers.checks import ConnectionSettings, test_many
    from providers.forward import _litellm
    from tests.upstream import Upstream

    up = Upstream(api_keys={"bench-key"}).start()
    if args.delay_ms:
        up.set_mode("slow", delay_ms=args.delay_ms)
    items = [(i, ConnectionSettings(provider="openai_compatible", auth_method="api_key",
                                    base_url=up.openai_url, secrets={"api_key": "bench-key"},
                                    model="test-model"))
             for i in range(args.connections)]
    t0 = time.perf_counter()
    _litellm()
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = test_many(items, concurrency=args.concurrency)
    elapsed = time.perf_counter() - t0
    up.stop()
    ok = sum(1 for r in results.values() if r.ok)
    print(f"litellm import: {import_s:.2f} s")
    print(f"{args.connections} connections, concurrency {args.concurrency}, upstream delay "
          f"{args.delay_ms} ms: {elapsed:.2f} s ({ok} ok, {len(results) - ok} failed; "
          f"{args.connections / elapsed:.0f} tests/s)")


if __name__ == "__main__":
    main()
