"""A canary key posted on create and update never comes back: not in any JSON response, not in
the browsable API's HTML, not in a log record (SQL included) captured during the test."""

from __future__ import annotations

import logging

import pytest
from django.db import connection as db_connection

from connections.models import Connection
from tests.conftest import CANARY

from .api_support import LIST_URL, bind, detail_url, make_workspace

pytestmark = pytest.mark.django_db

# The canary without its last four characters (which the hint may show).
CANARY_BODY = CANARY[:-4]


def assert_clean(text: str, where: str) -> None:
    assert CANARY not in text, f"canary in {where}"
    assert CANARY_BODY not in text, f"canary body in {where}"


@pytest.fixture
def sql_logged():
    """Log every SQL statement (with parameters) while the test runs."""
    before = db_connection.force_debug_cursor
    db_connection.force_debug_cursor = True
    yield
    db_connection.force_debug_cursor = before


def test_canary_never_leaves_the_server(staff_client, caplog, sql_logged):
    caplog.set_level(logging.DEBUG)
    for name in ("django", "django.db.backends", "django.request"):  # Django's default: INFO
        caplog.set_level(logging.DEBUG, logger=name)
    seen = []

    def hit(method, path, data=None, **extra):
        response = getattr(staff_client, method)(path, data, format="json", **extra) \
            if data is not None else getattr(staff_client, method)(path, **extra)
        seen.append((method, path, response))
        assert response.status_code < 500, (path, response.content[:300])
        return response

    # Create with the canary (and fail a few times with it).
    created = hit("post", LIST_URL, {"name": "c", "provider": "openai",
                                     "credentials": {"api_key": CANARY}}).json()
    hit("post", LIST_URL, {"name": "c", "provider": "openai", "credentials": {"api_key": CANARY}})
    hit("post", LIST_URL, {"name": "d", "provider": "openai", "colour": CANARY,
                           "credentials": {"api_key": CANARY}})
    hit("post", LIST_URL, {"name": "e", "provider": "openai", "config": {"api_key": CANARY}})
    hit("post", f"{LIST_URL}from-preset/", {"preset": "openai", "name": "p",
                                           "credentials": {"api_key": CANARY}})
    pk = created["id"]
    assert created["credentials"] == {"api_key": {"set": True, "hint": f"…{CANARY[-4:]}"}}

    # Update with the canary: replace, masked attempts, moved host, PUT.
    other = CANARY[::-1] + "-update"
    hit("patch", detail_url(pk), {"credentials": {"api_key": CANARY}})
    hit("patch", detail_url(pk), {"credentials": {"api_key": CANARY[:6] + "****" + CANARY[-4:]}})
    hit("patch", detail_url(pk), {"base_url": "https://elsewhere.example.com/v1"})
    hit("patch", detail_url(pk), {"credentials": {"api_key": CANARY}, "is_active": "x"})
    hit("put", detail_url(pk), {"name": "c2", "provider": "openai",
                                "credentials": {"api_key": CANARY}})
    hit("put", detail_url(pk), {"name": "c2", "provider": "openai",
                                "credentials": {"api_key": other}})
    hit("patch", detail_url(pk), {"credentials": {"api_key": CANARY}})

    # Every read and action.
    bind(make_workspace("w"), Connection.objects.get(pk=pk))
    target = hit("post", f"{LIST_URL}from-preset/", {"preset": "openai", "name": "t",
                                                    "credentials": {"api_key": CANARY}}).json()
    hit("get", LIST_URL)
    hit("get", detail_url(pk))
    hit("get", f"{detail_url(pk)}dependents/")
    hit("post", f"{detail_url(pk)}set-default/")
    hit("delete", detail_url(pk))
    hit("post", f"{detail_url(pk)}move-bindings/", {"to": target["id"]})

    # The browsable API (HTML forms included), two ways of asking for it.
    for path in (LIST_URL, detail_url(pk), f"{detail_url(pk)}dependents/",
                 f"{LIST_URL}from-preset/"):
        html = hit("get", path + "?format=api")
        assert html["Content-Type"].startswith("text/html")
        if path == detail_url(pk):  # the edit form, prefilled from the stored connection
            assert "&quot;name&quot;: &quot;c2&quot;" in html.content.decode()
        html2 = hit("get", path, HTTP_ACCEPT="text/html")
        assert html2["Content-Type"].startswith("text/html")
    hit("post", LIST_URL + "?format=api", {"name": "c", "provider": "openai",
                                           "credentials": {"api_key": CANARY}})

    for method, path, response in seen:
        assert_clean(response.content.decode(), f"{method} {path}")
        assert_clean(str(response.headers), f"headers of {method} {path}")
    assert Connection.objects.get(pk=pk).secrets == {"api_key": CANARY}  # it was stored

    assert caplog.records, "nothing was logged: the log check would prove nothing"
    assert any("INSERT" in r.getMessage() for r in caplog.records)  # SQL was captured
    for record in caplog.records:
        assert_clean(record.getMessage(), f"log record {record.name}")
        assert_clean(str(record.args), f"log args {record.name}")
        if record.exc_info:
            assert_clean(logging.Formatter().formatException(record.exc_info), "traceback")
