"""What metrics cost a /v1 call: `python bench/metrics.py [--rounds 3] [--duration 8]`.

Starts the bench upstream and llmconn under uvicorn (one worker, uvloop + httptools, as
bench/run.py's gateway benchmark) against PostgreSQL and Redis (BENCH_DATABASE_URL,
BENCH_REDIS_URL; the database is emptied), and measures non-streamed chat completions at
concurrency 1 with bench/loadgen.py: direct to the upstream, then through llmconn with
LLMCONN_METRICS_ENABLED=false and =true, and =true in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR), alternating rounds (ABCABC...) so that drift of a noisy machine
falls on every variant alike. "Added" is llmconn's p50 minus the direct p50 of the same round.
Also the CPU time of the instrumentation itself per call, in-process (`--micro`), which a
noisy machine disturbs far less than the end-to-end A/B. Prints a table; appends it to
bench/RESULTS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402 - bench/run.py's helpers (processes, seeding, loadgen)

VARIANTS = {
    "metrics off": {"LLMCONN_METRICS_ENABLED": "false"},
    "metrics on": {"LLMCONN_METRICS_ENABLED": "true"},
    "metrics on, multiprocess": {"LLMCONN_METRICS_ENABLED": "true",
                                 "PROMETHEUS_MULTIPROC_DIR": "<tmp>"},
}


def serve(env_extra: dict) -> tuple:
    port = run.free_port()
    env = {k: v for k, v in run.ENV.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(env_extra)
    if env.get("PROMETHEUS_MULTIPROC_DIR") == "<tmp>":
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="llmconn-bench-prom-")
    process = run.start([run.PY, "-m", "uvicorn", "llmconn.asgi:application", "--host",
                         "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http",
                         "httptools", "--no-access-log", "--log-level", "warning"],
                        env=env, log="metrics-llmconn")
    run.wait_http(f"http://127.0.0.1:{port}/healthz", process=process)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def micro(calls: int = 20_000) -> float:
    """CPU time (µs) of the instrumentation of one /v1 call, in this process: the ASGI wrapper
    around a handler that answers at once, and one provider attempt with tokens and cost."""
    import asyncio
    from types import SimpleNamespace

    run.django_setup()
    from llmconn import metrics

    resolved = SimpleNamespace(workspace_slug="bench", connection_name="bench-upstream",
                               provider="openai_compatible", model="bench-model")
    scope = {"type": "http", "path": "/v1/chat/completions"}

    async def handle(scope, receive, send):
        metrics.observe_attempt(resolved, started=0.0, answered=0.0, status=200,
                                input_tokens=10, output_tokens=20, cost=0.0001)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):
        pass

    async def bare():
        for _ in range(calls):
            await handle(scope, None, send)

    async def instrumented():
        for _ in range(calls):
            await metrics.observe_gateway(handle, scope, None, send)

    # The bare loop calls observe_attempt too: measure it alone as well.
    async def attempt_only():
        for _ in range(calls):
            metrics.observe_attempt(resolved, started=0.0, answered=0.0, status=200,
                                    input_tokens=10, output_tokens=20, cost=0.0001)

    def timed(coro_fn) -> float:
        asyncio.run(coro_fn())  # warm
        start = time.process_time()
        asyncio.run(coro_fn())
        return (time.process_time() - start) / calls * 1e6

    wrapper = timed(instrumented) - timed(bare)
    return wrapper + timed(attempt_only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--micro", action="store_true",
                        help="only print the instrumentation's CPU µs per call (this process)")
    args = parser.parse_args()
    if args.micro:
        print(f"{micro():.2f}")
        return

    run.ensure_services()
    up_port = run.free_port()
    upstream = run.start([run.PY, str(run.BENCH / "upstream.py"), "--port", str(up_port),
                          "--key", run.UPSTREAM_KEY], log="metrics-upstream")
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    run.wait_http(f"{upstream_url}/models", process=upstream)
    key = run.seed_gateway(upstream_url)
    auth = [f"Authorization: Bearer {key}"]
    direct = (f"{upstream_url}/chat/completions", [f"Authorization: Bearer {run.UPSTREAM_KEY}"],
              {**run.CHAT_BODY, "model": "bench-model"})
    added: dict[str, list[float]] = {name: [] for name in VARIANTS}
    rps: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for n in range(args.rounds):
            for name, extra in VARIANTS.items():
                process, url = serve(extra)
                try:
                    run.loadgen(url, body=run.CHAT_BODY, headers=auth, concurrency=1,
                                duration=1)  # warm
                    base = run.loadgen(direct[0], body=direct[2], headers=direct[1],
                                       concurrency=1, duration=args.duration / 2)
                    ours = run.loadgen(url, body=run.CHAT_BODY, headers=auth, concurrency=1,
                                       duration=args.duration)
                finally:
                    run.stop(process)
                if ours["errors"]:
                    raise RuntimeError(f"{name}: errors {ours}")
                added[name].append(ours["p50_ms"] - base["p50_ms"])
                rps[name].append(ours["rps"])
                print(f"  round {n + 1} {name}: added p50 {added[name][-1]:.3f} ms, "
                      f"{ours['rps']:.0f} req/s", flush=True)
    finally:
        run.stop_all()

    micro_us = {}
    for mode, extra in (("one process", {}), ("multiprocess", {
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="llmconn-bench-prom-")})):
        env = {k: v for k, v in run.ENV.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        out = subprocess.run([run.PY, __file__, "--micro"], env={**env, **extra},
                             capture_output=True, text=True, check=True, cwd=run.ROOT)
        micro_us[mode] = float(out.stdout.strip().splitlines()[-1])
    off = statistics.median(added["metrics off"])
    lines = ["| variant | added p50, c=1 (ms), median of rounds | vs off (ms) | rounds (ms) | "
             "req/s c=1 |", "|---|---|---|---|---|"]
    for name in VARIANTS:
        med = statistics.median(added[name])
        lines.append(f"| {name} | {med:.3f} | {med - off:+.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in added[name])} | "
                     f"{statistics.median(rps[name]):.0f} |")
    table = "\n".join(lines) + "\n\nCPU time of the instrumentation of one call, measured " \
        "in-process (`--micro`): " + ", ".join(f"{mode} {us:.1f} µs" for mode, us in
                                                 micro_us.items()) + "."
    print(table)
    if not args.no_record:
        machine = run.machine()
        with open(run.RESULTS, "a") as fh:
            fh.write(f"\n## Metrics overhead, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
                     f"`python bench/metrics.py --rounds {args.rounds} --duration "
                     f"{args.duration}`; machine: {machine}. Target: metrics on adds at most "
                     f"0.1 ms to the added latency.\n\n{table}\n")


if __name__ == "__main__":
    main()
