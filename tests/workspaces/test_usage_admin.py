"""The admin's usage report page: a server-side SVG chart, the report table, budgets."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache

from workspaces import budgets, services
from workspaces.usage_admin import build_chart

URL = "/admin/workspaces/usagereport/"


@pytest.fixture
def admin_client(client, staff_user):
    cache.clear()
    budgets.clear_local_cache()
    client.force_login(staff_user)
    return client


@pytest.fixture
def usage(db, make_connection, upstream_factory):
    conn = make_connection(upstream_factory(), name="c1")
    ws = services.workspace_create(name="Alpha <b>", slug="alpha",
                                   bindings={"chat": {"connection": str(conn.pk)}})
    for latency in (10, 20, 30):
        services.usage_record_create(
            workspace_id=ws.pk, connection_id=str(conn.pk), api_key_id=None, role="chat",
            model="m", endpoint="chat", stream=False, status_code=200, input_tokens=10,
            output_tokens=5, cost=Decimal("0.5"), latency_ms=latency)
    budgets.budget_create(scope="workspace", workspace=ws, period="month", metric="cost",
                           limit=Decimal("1"), name="alpha cap")
    return {"ws": ws, "conn": conn}


def test_the_usage_page_draws_a_chart_and_lists_usage_and_budgets(admin_client, usage):
    response = admin_client.get(URL, {"metric": "cost"})
    assert response.status_code == 200
    html = response.content.decode()
    assert '<svg class="usage-chart"' in html and html.count('<rect class="bar"') == 1
    assert "Alpha &lt;b&gt;" in html and "Alpha <b>" not in html  # escaped
    assert "1.50000000" in html  # cost of the three calls
    assert "alpha cap" in html and "150 %" not in html and "100 %" in html
    assert "<script" not in html.split('id="content-main"')[1]  # no JavaScript, no CDN


def test_filters_and_grouping(admin_client, usage):
    html = admin_client.get(URL, {"series": "connection", "workspace": "alpha"}).content.decode()
    assert "<th>Connection</th>" in html and ">c1<" in html
    html = admin_client.get(URL, {"since": "2001-01-01", "until": "2001-01-05"}).content.decode()
    assert "No calls in this period." in html
    response = admin_client.get(URL, {"since": "2001-01-05", "until": "2001-01-01"})
    assert response.status_code == 200 and "since must be before until" in response.content.decode()
    response = admin_client.get(URL, {"since": "0001-01-01", "until": "9999-12-31"})
    assert response.status_code == 200 and "at most 366 days" in response.content.decode()
    assert admin_client.get(URL, {"until": "0001-01-01"}).status_code == 200


def test_non_staff_cannot_see_the_usage_page(client, plain_user):
    client.force_login(plain_user)
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_chart_stacks_series_and_merges_the_smallest_into_other():
    rows = [{"day": "2030-01-01", "workspace_name": f"w{i}", "calls": i + 1, "errors": 0,
             "input_tokens": 0, "output_tokens": 0, "cost": None} for i in range(8)]
    chart = build_chart(days=["2030-01-01", "2030-01-02"], rows=rows, series_key="workspace",
                        metric="calls")
    assert [item["name"] for item in chart["legend"]] == ["w7", "w6", "w5", "w4", "w3", "w2",
                                                          "other"]
    assert len(chart["bars"]) == 7
    assert chart["ticks"][-1]["text"] == "50"  # 36 calls, rounded up to a round number
    top = min(bar["y"] for bar in chart["bars"])
    assert top >= 8
