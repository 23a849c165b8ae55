"""A picture of docs/grafana-dashboard.json with live data, without Grafana.

Grafana cannot be installed on the machine this project is built on, so this script draws the
dashboard's panels itself: it runs llmconn, drives traffic through it, lets a real Prometheus
scrape /metrics, evaluates every panel's PromQL through Prometheus' HTTP API and draws the
results with matplotlib in the dashboard's grid layout (gridPos), with each panel's title and
unit. It is not Grafana's rendering; the queries, layout and data are real.

What runs (all on 127.0.0.1, stopped at the end):
- the bench upstream (bench/upstream.py, 30 ms per answer, streams of 8 chunks);
- llmconn under uvicorn with PROMETHEUS_MULTIPROC_DIR and a Celery worker with its own
  directory, read by the web process through LLMCONN_METRICS_EXTRA_DIRS (as docker-compose.yml);
  /metrics is open to 127.0.0.1 through LLMCONN_METRICS_ALLOW;
- `prometheus` (Debian's package: `apt-get install -y prometheus`), TSDB in a temporary
  directory, scraping /metrics every second;
- 75 s of mixed traffic (plain and streamed chat calls from two workspaces, calls bound to a
  connection whose port is closed and to one with a wrong provider key, a wrong gateway key,
  a body that is not JSON), connection tests of every connection and health sweeps.

Template variables become what "All" means: `$workspace` -> `.*`; `$__rate_interval` -> 15s;
`$__range` -> the traffic window. A panel whose queries return nothing or fail is reported and
makes the script exit 1: that is a bug in the dashboard.

Database and Redis are bench/run.py's (BENCH_DATABASE_URL, BENCH_REDIS_URL; the database is
emptied). matplotlib is not a project dependency: the drawing runs in a separate Python that
has it (--plot-python, default /tmp/dashvenv/bin/python):

    python3.11 -m venv /tmp/dashvenv && /tmp/dashvenv/bin/pip install matplotlib
    apt-get install -y prometheus
    .venv/bin/python docs/render_dashboard.py [--seconds 75] [--out docs/screenshots/dashboard.png]

`--plot DATA.json PNG` only draws (what the script runs in the plotting Python).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
DASHBOARD = DOCS / "grafana-dashboard.json"
RATE_INTERVAL = "15s"
STEP = 2  # seconds between points of a range query


# --- collecting ----------------------------------------------------------------------------------

def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    import run  # bench/run.py's helpers: processes, seeding, the shared environment

    return run


def _seed(run, upstream_url: str, dead_url: str) -> dict:
    """Connections and workspaces the traffic uses; returns {name: gateway API key}."""
    main_key = run.seed_gateway(upstream_url)  # empties the tables; "bench-upstream", "Bench"
    from connections.models import Connection
    from connections.services import connection_create, connection_update
    from workspaces.models import Workspace
    from workspaces.services import api_key_create, workspace_create

    connection_update(connection=Connection.objects.get(name="bench-upstream"),
                      input_cost_per_million_tokens=3, output_cost_per_million_tokens=15)
    eu = connection_create(name="upstream-eu", provider="openai_compatible",
                           auth_method="api_key", base_url=upstream_url,
                           default_model="bench-model", credentials={"api_key": run.UPSTREAM_KEY},
                           input_cost_per_million_tokens=10, output_cost_per_million_tokens=30)
    dead = connection_create(name="dead-port", provider="openai_compatible",
                             auth_method="api_key", base_url=dead_url,
                             default_model="bench-model", credentials={"api_key": "sk-dead"},
                             timeout_seconds=5)
    wrong = connection_create(name="wrong-key", provider="openai_compatible",
                              auth_method="api_key", base_url=upstream_url,
                              default_model="bench-model",
                              credentials={"api_key": "sk-not-the-upstream-key"})
    keys = {"bench": main_key}
    for name, conn in (("research", eu), ("flaky", dead), ("misconfigured", wrong)):
        ws = workspace_create(name=name.title(), bindings={"chat": {"connection": str(conn.pk)}})
        keys[name] = api_key_create(workspace=ws, name="dashboard")[1]
    assert Workspace.objects.count() == 4
    return keys


def _test_connections() -> None:
    """Queue a test of every connection (the Celery worker runs them)."""
    from connections.diagnostics import connection_test_request
    from connections.models import Connection

    for conn in Connection.objects.all():
        connection_test_request(connection=conn)


def _sweep() -> None:
    from connections.tasks import connection_health_sweep_task

    connection_health_sweep_task.delay()


# (weight, workspace key name or None for a wrong gateway key, stream, body is JSON)
MIX = [(34, "bench", False, True), (14, "bench", True, True), (16, "research", False, True),
       (10, "research", True, True), (8, "flaky", False, True), (7, "misconfigured", False, True),
       (5, None, False, True), (4, "bench", False, False)]


async def _traffic(base: str, keys: dict, seconds: float) -> dict:
    """Chat calls for `seconds` at a rate that swings between ~4 and ~20 per second."""
    import asyncio

    import httpx

    body = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}
    counts: dict = {}
    rng = random.Random(20)
    weights = [m[0] for m in MIX]

    async def one(client, key, stream, valid):
        headers = {"Authorization": f"Bearer {keys[key] if key else 'sk-llmconn-wrong'}"}
        try:
            if stream:
                async with client.stream("POST", "/v1/chat/completions", headers=headers,
                                         json={**body, "stream": True,
                                               "stream_options": {"include_usage": True}}) as r:
                    async for _ in r.aiter_lines():
                        pass
                    status = r.status_code
            elif valid:
                status = (await client.post("/v1/chat/completions", headers=headers,
                                            json=body)).status_code
            else:
                status = (await client.post("/v1/chat/completions", headers=headers,
                                            content=b"{not json")).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        counts[status] = counts.get(status, 0) + 1

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        started = time.monotonic()
        tasks = set()
        last_tests = last_sweep = -1e9
        while (now := time.monotonic() - started) < seconds:
            if now - last_tests >= 10:
                last_tests = now
                tasks.add(asyncio.create_task(asyncio.to_thread(_test_connections)))
            if now - last_sweep >= 30:
                last_sweep = now
                tasks.add(asyncio.create_task(asyncio.to_thread(_sweep)))
            rate = 12 + 8 * math.sin(2 * math.pi * now / 40)
            _, key, stream, valid = rng.choices(MIX, weights)[0]
            tasks.add(asyncio.create_task(one(client, key, stream, valid)))
            tasks = {t for t in tasks if not t.done()}
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return counts


def _prometheus_config(path: Path, target: str) -> None:
    path.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: llmconn
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
""")


def _expr(expr: str, range_s: int) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", f"{range_s}s")
            .replace("${workspace}", ".*").replace("$workspace", ".*"))


def _legend(fmt: str, labels: dict) -> str:
    if not fmt:
        return ", ".join(f'{k}="{v}"' for k, v in labels.items() if k != "__name__")
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v).replace("{{ " + k + " }}", v)
    return out


def _variables(prom: str) -> dict:
    """The dashboard's query variables (`label_values(metric, label)`) as Prometheus answers
    them: {name: [values]}."""
    import re

    import httpx

    dashboard = json.loads(DASHBOARD.read_text())
    out = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"]).groups()
        answer = httpx.get(f"{prom}/api/v1/label/{label}/values",
                           params={"match[]": metric}, timeout=30).json()
        out[var["name"]] = answer.get("data") or []
    return out


def _query_panels(prom: str, start: float, end: float, zero: float) -> list[dict]:
    """Every panel's targets evaluated by Prometheus: time series as range queries, stat,
    bar gauge and table panels as instant queries at `end` (what Grafana shows there);
    times in seconds since `zero`."""
    import httpx

    dashboard = json.loads(DASHBOARD.read_text())
    range_s = int(end - start)
    panels = []
    with httpx.Client(base_url=prom, timeout=30) as client:
        for panel in dashboard["panels"]:
            out = {k: panel.get(k) for k in ("id", "type", "title", "description", "gridPos")}
            out["unit"] = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
            out["series"], out["errors"] = [], []
            for target in panel["targets"]:
                expr = _expr(target["expr"], range_s)
                instant = panel["type"] != "timeseries" or target.get("instant")
                if instant:
                    r = client.get("/api/v1/query", params={"query": expr, "time": end})
                else:
                    r = client.get("/api/v1/query_range", params={
                        "query": expr, "start": start, "end": end, "step": STEP})
                answer = r.json()
                if answer.get("status") != "success":
                    out["errors"].append(f"{target['refId']}: {answer.get('error')}")
                    continue
                for item in answer["data"]["result"]:
                    points = item["values"] if "values" in item else [item["value"]]
                    out["series"].append({
                        "legend": _legend(target.get("legendFormat", ""), item["metric"]),
                        "labels": item["metric"],
                        "points": [[float(t) - zero, float(v)] for t, v in points]})
                if not answer["data"]["result"]:
                    out["errors"].append(f"{target['refId']}: no data for {expr}")
            panels.append(out)
    return panels


def collect(seconds: float) -> dict:
    run = _bench()
    prometheus = shutil.which("prometheus")
    if not prometheus:
        sys.exit("prometheus is not installed (apt-get install -y prometheus).")
    run.ensure_services()
    tmp = Path(tempfile.mkdtemp(prefix="llmconn-dashboard-"))
    web_dir, worker_dir = tmp / "metrics-web", tmp / "metrics-worker"
    web_dir.mkdir()
    worker_dir.mkdir()
    up_port, web_port, prom_port, dead_port = (run.free_port() for _ in range(4))
    try:
        upstream = run.start([run.PY, str(ROOT / "bench" / "upstream.py"), "--port", str(up_port),
                              "--key", run.UPSTREAM_KEY, "--delay-ms", "30", "--chunks", "8",
                              "--chunk-interval-ms", "15"], log="dashboard-upstream")
        upstream_url = f"http://127.0.0.1:{up_port}/v1"
        run.wait_http(f"{upstream_url}/models", process=upstream)
        keys = _seed(run, upstream_url, f"http://127.0.0.1:{dead_port}/v1")

        env = {**run.ENV, "PROMETHEUS_MULTIPROC_DIR": str(worker_dir)}
        run.start([run.PY, "-m", "celery", "-A", "llmconn", "worker", "--concurrency", "2",
                   "--loglevel", "WARNING"], env=env, log="dashboard-worker")
        env = {**run.ENV, "PROMETHEUS_MULTIPROC_DIR": str(web_dir),
               "LLMCONN_METRICS_EXTRA_DIRS": str(worker_dir),
               "LLMCONN_METRICS_ALLOW": "127.0.0.1/32"}
        web = run.start([run.PY, "-m", "uvicorn", "llmconn.asgi:application", "--host",
                         "127.0.0.1", "--port", str(web_port), "--no-access-log",
                         "--log-level", "warning"], env=env, log="dashboard-llmconn")
        run.wait_http(f"http://127.0.0.1:{web_port}/metrics", process=web)

        config = tmp / "prometheus.yml"
        _prometheus_config(config, f"127.0.0.1:{web_port}")
        prom = run.start([prometheus, f"--config.file={config}",
                          f"--storage.tsdb.path={tmp / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{prom_port}"], log="dashboard-prom")
        prom_url = f"http://127.0.0.1:{prom_port}"
        run.wait_http(f"{prom_url}/-/ready", process=prom)
        time.sleep(3)

        import asyncio

        start = time.time()
        print(f"traffic for {seconds:.0f} s ...", flush=True)
        counts = asyncio.run(_traffic(f"http://127.0.0.1:{web_port}", keys, seconds))
        print(f"answers: {counts}", flush=True)
        time.sleep(4)  # the last scrapes
        end = time.time()
        panels = _query_panels(prom_url, start - 5, end, start)
        variables = _variables(prom_url)
    finally:
        run.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"panels": panels, "variables": variables, "seconds": round(seconds), "answers":
            {str(k): v for k, v in counts.items()},
            "taken": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))}


# --- drawing (runs in the Python that has matplotlib) ----------------------------------------

BG, PANEL, TEXT, GRID, DIM = "#111217", "#181b1f", "#ccccdc", "#2c3235", "#8e8e9e"
COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
          "#fade2a", "#37872d", "#c4162a"]
UNIT_SUFFIX = {"reqps": " req/s", "ops": " ops/s"}


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        a = abs(value)
        if a == 0:
            return "0"
        if a < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if a < 1:
            return f"{value * 1e3:.3g} ms"
        return f"{value:.3g} s"
    if unit == "currencyUSD":
        return f"${value:.4f}" if abs(value) < 1 else f"${value:,.2f}"
    if abs(value) >= 1000:
        text = f"{value / 1000:.3g}k"
    else:
        text = f"{value:.3g}"
    return text + UNIT_SUFFIX.get(unit, "")


def _empty(ax, panel):
    ax.text(0.5, 0.5, "No data\n" + "\n".join(panel["errors"])[:300], color="#f2495c",
            ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)


def _timeseries(ax, panel):
    from matplotlib.ticker import FuncFormatter

    for i, s in enumerate(panel["series"]):
        xs = [p[0] for p in s["points"]]
        ys = [p[1] for p in s["points"]]
        ax.plot(xs, ys, color=COLORS[i % len(COLORS)], linewidth=1.6, label=s["legend"])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt(v, panel["unit"])))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f} s"))
    top = max((p[1] for s in panel["series"] for p in s["points"]), default=1) or 1
    ax.set_ylim(0, top * 1.3)  # room for the legend above the lines
    ax.grid(color=GRID, linewidth=0.6)
    ax.tick_params(colors=DIM, labelsize=8)
    if panel["series"]:
        legend = ax.legend(loc="upper left", fontsize=8, frameon=False, labelcolor=TEXT,
                           ncol=min(3, len(panel["series"])))
        legend.set_zorder(5)


def _bargauge(ax, panel):
    series = sorted(panel["series"], key=lambda s: s["points"][-1][1])
    values = [s["points"][-1][1] for s in series]
    names = [s["legend"] for s in series]
    ax.barh(names, values, color=[COLORS[i % len(COLORS)] for i in range(len(values))],
            height=0.6)
    top = max(values) if values else 1
    for y, v in enumerate(values):
        ax.text(v + top * 0.01, y, _fmt(v, panel["unit"]), color=TEXT, va="center", fontsize=10)
    ax.set_xlim(0, top * 1.18)
    ax.set_xticks([])
    ax.tick_params(colors=TEXT, labelsize=10, length=0)


def _stat(ax, panel):
    value = panel["series"][0]["points"][-1][1]
    ax.text(0.5, 0.45, _fmt(value, panel["unit"]), color="#f2495c" if value else "#73bf69",
            ha="center", va="center", fontsize=54, fontweight="bold", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _table(ax, panel):
    rows = [s["labels"] for s in panel["series"]]
    columns = [c for c in ("connection", "provider", "error_class", "instance", "job")
               if any(c in r for r in rows)]
    cells = [[r.get(c, "") for c in columns] + [f"{s['points'][-1][1]:g}"]
             for r, s in zip(rows, panel["series"])]
    table = ax.table(cellText=cells, colLabels=columns + ["Value"], loc="upper center",
                     cellLoc="left", colLoc="left", bbox=[0, 1 - 0.16 * (len(cells) + 1), 1,
                                                          0.16 * (len(cells) + 1)])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, _), cell in table.get_celld().items():
        cell.set_edgecolor(GRID)
        cell.set_facecolor(PANEL if r else "#22252b")
        cell.get_text().set_color(TEXT)
    ax.set_xticks([])
    ax.set_yticks([])


def plot(data_path: str, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # "$__rate_interval", "$0.03" are text
    import matplotlib.pyplot as plt

    data = json.loads(Path(data_path).read_text())
    panels = data["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(20, rows * 0.36 + 1.3), facecolor=BG)
    head = 1.3 / (rows * 0.36 + 1.3)
    fig.text(0.01, 1 - head * 0.28, "llmconn  (docs/grafana-dashboard.json)", color=TEXT,
             fontsize=15, fontweight="bold", va="center")
    lines = [
        "Not Grafana: each panel's PromQL evaluated by a live Prometheus scraping llmconn's "
        f"/metrics every second during {data['seconds']} s of bench traffic ({data['taken']}), "
        "drawn by docs/render_dashboard.py in the dashboard's grid.",
        f"$workspace = All ({', '.join(data['variables'].get('workspace', []))}); "
        f"$__rate_interval = {RATE_INTERVAL}; x axis: seconds since the traffic started. "
        "Answers: " + ", ".join(f"{v} x {k}" for k, v in sorted(data["answers"].items())) + ".",
    ]
    for i, line in enumerate(lines):
        fig.text(0.01, 1 - head * (0.58 + 0.24 * i), line, color=DIM, fontsize=10, va="center")
    gap = 0.004
    for panel in panels:
        g = panel["gridPos"]
        left, width = g["x"] / 24 + gap, g["w"] / 24 - 2 * gap
        top = (1 - head) * (1 - g["y"] / rows)
        height = (1 - head) * g["h"] / rows
        frame = fig.add_axes([left, top - height + gap, width, height - 2 * gap])
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        frame.text(0.012, 0.965, panel["title"], color=TEXT, fontsize=11, fontweight="bold",
                   va="top", transform=frame.transAxes)
        # the panel's plotting area inside its frame, room for the title and tick labels
        inner = [left + width * 0.075, top - height + gap + (height - 2 * gap) * 0.12,
                 width * 0.9, (height - 2 * gap) * 0.74]
        if panel["type"] == "bargauge":
            inner = [left + width * 0.12, inner[1], width * 0.85, inner[3]]
        if panel["type"] in ("stat", "table"):
            inner = [left + width * 0.02, inner[1], width * 0.96, inner[3]]
        ax = fig.add_axes(inner)
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if not panel["series"]:
            ax.set_xticks([])
            ax.set_yticks([])
            _empty(ax, panel)
            continue
        {"timeseries": _timeseries, "bargauge": _bargauge, "stat": _stat,
         "table": _table}.get(panel["type"], _timeseries)(ax, panel)
    fig.savefig(png, dpi=100, facecolor=BG)
    from PIL import Image  # matplotlib's own dependency: 256 colours keep the PNG small

    Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)
    print(f"wrote {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=75)
    parser.add_argument("--out", default=str(DOCS / "screenshots" / "dashboard.png"))
    parser.add_argument("--plot-python", default="/tmp/dashvenv/bin/python")
    parser.add_argument("--data", default=str(ROOT / "var" / "dashboard-data.json"),
                        help="where the query results are kept (JSON)")
    parser.add_argument("--plot", nargs=2, metavar=("DATA", "PNG"), help="only draw")
    args = parser.parse_args()
    if args.plot:
        plot(*args.plot)
        return
    if not Path(args.plot_python).exists():
        sys.exit(f"{args.plot_python} not found: create it (see this script's docstring) or "
                 "pass --plot-python.")
    data = collect(args.seconds)
    Path(args.data).parent.mkdir(exist_ok=True)
    Path(args.data).write_text(json.dumps(data, indent=1))
    subprocess.run([args.plot_python, __file__, "--plot", args.data, args.out], check=True)
    empty = [f"{p['title']}: {'; '.join(p['errors'])}" for p in data["panels"] if p["errors"]]
    empty += [f"variable ${name}: no values" for name, values in data["variables"].items()
              if not values]
    for line in empty:
        print(f"PANEL WITHOUT DATA (a dashboard bug): {line}")
    sys.exit(1 if empty else 0)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
