"""llmconn.asgi: /v1/* goes straight to the gateway views, everything else through Django."""

from __future__ import annotations

import asyncio
import os
import sys

import httpx
import pytest

from tests.asgi_client import production_app


@pytest.fixture(scope="module")
def app():
    return production_app()


def _request(app, method, path, **kwargs):
    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(run())


def test_v1_is_served_without_middleware_in_openai_error_format(app):
    response = _request(app, "POST", "/v1/chat/completions",
                        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert "set-cookie" not in response.headers  # no session/CSRF middleware ran
    assert "x-frame-options" not in response.headers  # nor clickjacking's


def test_unknown_v1_path_and_wrong_method_answer_like_the_url_routes(app):
    assert _request(app, "GET", "/v1/nope").json()["error"]["code"] == "not_found"
    assert _request(app, "GET", "/v1/chat/completions").status_code == 405


def test_disallowed_host_is_refused_on_v1(app):
    response = _request(app, "GET", "/v1/models", headers={"Host": "evil.example"})
    assert response.status_code == 400


def test_other_paths_still_go_through_django(app):
    response = _request(app, "GET", "/healthz")
    assert response.status_code == 200
    assert response.headers.get("x-frame-options") == "DENY"  # middleware ran


def test_the_gil_switch_interval_is_set_by_the_servers_startup_not_by_import(app, settings):
    """Importing llmconn.asgi leaves the process alone; a server's lifespan startup applies
    LLMCONN_GIL_SWITCH_INTERVAL and LLMCONN_GC_THRESHOLD and freezes what is loaded (uvicorn
    and gunicorn's uvicorn workers send it)."""
    import gc
    import subprocess

    check = ("import gc, sys; before = sys.getswitchinterval(), gc.get_threshold(); "
             "import llmconn.asgi; "
             "assert (sys.getswitchinterval(), gc.get_threshold()) == before, before; "
             "assert gc.get_freeze_count() == 0")
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="llmconn.test_settings")
    done = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    before, gc_before = sys.getswitchinterval(), gc.get_threshold()
    settings.LLMCONN_GIL_SWITCH_INTERVAL = 0.00025
    settings.LLMCONN_GC_THRESHOLD = (12345, 30, 40)
    sent = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    try:
        asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        assert sys.getswitchinterval() == pytest.approx(0.00025)
        assert gc.get_threshold() == (12345, 30, 40)
        assert gc.get_freeze_count() > 10000  # the loaded project is out of the GC's passes
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    finally:
        sys.setswitchinterval(before)
        gc.set_threshold(*gc_before)
        gc.unfreeze()


@pytest.mark.parametrize("value", ["1000,10", "a,b,c", "100,0,10", "100,10,10,10"])
def test_a_bad_gc_threshold_stops_the_start_naming_the_setting(value):
    import subprocess

    env = dict(os.environ, DJANGO_SETTINGS_MODULE="llmconn.test_settings",
               LLMCONN_GC_THRESHOLD=value)
    done = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "LLMCONN_GC_THRESHOLD" in done.stderr and "gen0,gen1,gen2" in done.stderr
