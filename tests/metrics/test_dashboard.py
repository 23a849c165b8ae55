"""docs/grafana-dashboard.json only uses metrics that /metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

from llmconn.metrics import connection_health

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _exported() -> set[str]:
    names = set()
    for family in [*REGISTRY.collect(), *connection_health([])]:
        names.add(family.name)
    return names


def test_every_metric_the_dashboard_queries_is_exported():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = set(re.findall(r"\bllmconn_[a-z_]+", " ".join(exprs)))
    assert len(used) >= 8
    exported = _exported()
    for name in used:
        base = next((name[:-len(s)] for s in SUFFIXES if name.endswith(s)), name)
        assert base in exported, f"{name} is not exported"
