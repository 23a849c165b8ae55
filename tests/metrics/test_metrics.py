"""GET /metrics after real /v1 calls, a failing call and a connection test (one process)."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.authtoken.models import Token

from .conftest import asgi_request, parse, value

pytestmark = [pytest.mark.django_db]

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(autouse=True)
def _room_for_labels():
    # The whole suite makes many workspaces in this one process: no "other" here.
    with override_settings(LLMCONN_METRICS_MAX_LABEL_VALUES=100_000):
        yield


@pytest.fixture
def staff_token(staff_user) -> str:
    return Token.objects.create(user=staff_user).key


def scrape(app, token) -> dict:
    response = asgi_request(app, "GET", "/metrics", headers={"Authorization": f"Token {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def chat(app, key, **body):
    return asgi_request(app, "POST", "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "chat", "messages": HELLO, **body})


def test_calls_failures_tokens_and_latency_are_counted(
        asgi_app, staff_token, upstream, make_connection, make_workspace, make_key):
    good = make_connection(upstream, name="metrics-good")
    bad = make_connection(upstream, name="metrics-bad", key="sk-wrong-key-000000000001")
    ws = make_workspace("Metrics One", chat=good)
    ws_bad = make_workspace("Metrics Bad", chat=bad)
    key, key_bad = make_key(ws), make_key(ws_bad)
    before = scrape(asgi_app, staff_token)

    for _ in range(3):
        assert chat(asgi_app, key).status_code == 200
    streamed = chat(asgi_app, key, stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert chat(asgi_app, key_bad).status_code == 502  # the provider refused the stored key
    assert chat(asgi_app, "lck_not-a-real-key-00000000000").status_code == 401
    after = scrape(asgi_app, staff_token)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = dict(workspace="metrics-one", connection="metrics-good", provider="openai_compatible",
              model="test-model")
    assert delta("llmconn_gateway_requests_total", endpoint="chat", status_class="2xx",
                 error_class="none", **ok) == 4
    assert delta("llmconn_gateway_requests_total", endpoint="chat", status_class="5xx",
                 error_class="auth", workspace="metrics-bad", connection="metrics-bad") == 1
    assert delta("llmconn_gateway_requests_total", endpoint="chat", status_class="4xx",
                 error_class="unauthenticated", workspace="none") == 1
    assert delta("llmconn_provider_calls_total", status_class="2xx", **ok) == 4
    assert delta("llmconn_provider_calls_total", error_class="auth",
                 connection="metrics-bad") == 1
    # Each of the fake upstream's answers carries usage; the stream's too (include_usage).
    assert delta("llmconn_tokens_total", direction="input", **ok) > 0
    assert delta("llmconn_tokens_total", direction="output", **ok) > 0
    # Latency histograms: one observation per request, streams apart.
    for name in ("llmconn_gateway_request_duration_seconds", "llmconn_gateway_added_latency_seconds",
                 "llmconn_gateway_time_to_first_byte_seconds"):
        assert delta(f"{name}_count", endpoint="chat", stream="false") == 5
        assert delta(f"{name}_count", endpoint="chat", stream="true") == 1
    added = delta("llmconn_gateway_added_latency_seconds_sum", endpoint="chat")
    total = delta("llmconn_gateway_request_duration_seconds_sum", endpoint="chat")
    assert 0 < added < total  # the providers' time is not counted as added


def test_cost_is_counted_with_the_connections_price(
        asgi_app, staff_token, upstream, make_connection, make_workspace, make_key):
    priced = make_connection(upstream, name="metrics-priced", input_cost_per_million_tokens=1000,
                             output_cost_per_million_tokens=2000)
    key = make_key(make_workspace("Metrics Priced", chat=priced))
    before = scrape(asgi_app, staff_token)
    body = chat(asgi_app, key).json()
    after = scrape(asgi_app, staff_token)
    expected = (body["usage"]["prompt_tokens"] * 1000
                + body["usage"]["completion_tokens"] * 2000) / 1_000_000
    got = (value(after, "llmconn_cost_usd_total", connection="metrics-priced")
           - value(before, "llmconn_cost_usd_total", connection="metrics-priced"))
    assert got == pytest.approx(expected)


def test_connection_test_outcomes_health_and_task_counters(
        asgi_app, staff_token, staff_client, upstream, make_connection, closed_port_url,
        django_capture_on_commit_callbacks):
    up = make_connection(upstream, name="metrics-up")
    down = make_connection(upstream, name="metrics-down", base_url=closed_port_url)
    before = scrape(asgi_app, staff_token)
    for conn in (up, down):  # Celery is eager in tests: the task runs on commit
        with django_capture_on_commit_callbacks(execute=True):
            assert staff_client.post(f"/api/v1/connections/{conn.pk}/test/").status_code == 202
    after = scrape(asgi_app, staff_token)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("llmconn_connection_tests_total", kind="test", connection="metrics-up",
                 outcome="ok", error_class="none") == 1
    assert delta("llmconn_connection_tests_total", kind="test", connection="metrics-down",
                 outcome="failed", error_class="unreachable") == 1
    assert value(after, "llmconn_connection_healthy", connection="metrics-up") == 1
    assert value(after, "llmconn_connection_healthy", connection="metrics-down",
                 error_class="unreachable") == 0
    assert ("llmconn_connection_healthy", frozenset({
        ("connection", "metrics-down"), ("provider", "openai_compatible"),
        ("error_class", "unreachable")})) in after
    assert delta("llmconn_celery_tasks_total", task="connections.connection_test_run",
                 outcome="success") == 2
    assert delta("llmconn_celery_task_duration_seconds_count",
                 task="connections.connection_test_run") == 2


def test_model_label_comes_from_resolution_and_is_capped(
        asgi_app, staff_token, upstream, make_connection, make_workspace, make_key):
    from llmconn import metrics

    conn = make_connection(upstream, name="metrics-cap")
    key = make_key(make_workspace("Metrics Cap", chat=conn))
    assert chat(asgi_app, key).status_code == 200  # its connection, provider, model: seen
    before = scrape(asgi_app, staff_token)
    # A model the workspace does not offer is refused (404) and never becomes a label.
    response = chat(asgi_app, key, model="made-up-model-xyz")
    assert response.status_code == 404
    # Past the cap, a new workspace slug is counted as "other".
    with override_settings(LLMCONN_METRICS_MAX_LABEL_VALUES=0):
        metrics._seen.pop("workspace", None)
        try:
            assert chat(asgi_app, key).status_code == 200
        finally:
            metrics._seen.pop("workspace", None)
    after = scrape(asgi_app, staff_token)
    assert not any("made-up-model-xyz" in str(labels) for _, labels in after)
    assert (value(after, "llmconn_provider_calls_total", workspace="other",
                  connection="metrics-cap")
            - value(before, "llmconn_provider_calls_total", workspace="other",
                    connection="metrics-cap")) == 1


def test_metrics_refuse_anonymous_and_non_staff_outside_the_allow_list(
        asgi_app, plain_user, staff_token):
    anonymous = asgi_request(asgi_app, "GET", "/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    plain = Token.objects.create(user=plain_user).key
    refused = asgi_request(asgi_app, "GET", "/metrics",
                           headers={"Authorization": f"Token {plain}",
                                    "Accept": "application/openmetrics-text"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    with override_settings(LLMCONN_METRICS_ALLOW=["10.1.0.0/16"]):
        assert asgi_request(asgi_app, "GET", "/metrics",
                            client=("10.1.2.3", 5)).status_code == 200
        outside = asgi_request(asgi_app, "GET", "/metrics", client=("10.2.0.1", 5),
                               headers={"X-Forwarded-For": "10.1.2.3"})
        assert outside.status_code == 401


def test_a_metrics_failure_never_fails_the_call(
        asgi_app, upstream, make_connection, make_workspace, make_key, monkeypatch, caplog):
    from llmconn import metrics

    from workspaces.models import UsageRecord

    ws = make_workspace("Metrics Broken", chat=make_connection(upstream, name="metrics-broken"))
    key = make_key(ws)

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(metrics, "_child", broken)
    response = chat(asgi_app, key)
    assert response.status_code == 200 and response.json()["choices"]
    assert UsageRecord.objects.filter(workspace=ws, status_code=200).count() == 1
    assert any("Metrics not recorded" in r.getMessage() for r in caplog.records)
