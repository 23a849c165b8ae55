"""connections.diagnostics services: run-once semantics, revision checks, the reaper, the
health sweep and the test_connections command."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from connections import diagnostics
from connections.models import Connection, ConnectionTest
from tests.conftest import UPSTREAM_KEY
from tests.factories import ConnectionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def conn(upstream):
    return ConnectionFactory(name="good", base_url=upstream.openai_url,
                             secrets={"api_key": UPSTREAM_KEY})


def test_run_is_a_no_op_unless_pending(conn, upstream):
    test = diagnostics.connection_test_request(connection=conn)
    diagnostics.connection_test_run(test_id=test.pk)
    diagnostics.connection_test_run(test_id=test.pk)  # a redelivered message
    assert upstream.request_count == 1
    test.refresh_from_db()
    assert test.status == "succeeded"


def test_run_of_a_missing_test_does_nothing():
    import uuid

    assert diagnostics.connection_test_run(test_id=uuid.uuid4()) is None


def test_result_of_an_outdated_revision_does_not_change_the_status(conn, upstream):
    test = diagnostics.connection_test_request(connection=conn)
    # The test reads the connection as it is when it starts, so change it during the call:
    test, s = diagnostics._start(test.pk, "test")
    Connection.objects.filter(pk=conn.pk).update(revision=conn.revision + 1)
    diagnostics._finish(test, ok=True, message="ok", latency_ms=1)
    conn.refresh_from_db()
    assert conn.status == "untested"


def test_unreadable_credentials_fail_as_auth(conn, settings):
    test = diagnostics.connection_test_request(connection=conn)
    settings.FERNET_KEYS = ["another-key-entirely"]
    diagnostics.connection_test_run(test_id=test.pk)
    test.refresh_from_db()
    assert (test.status, test.error_class) == ("failed", "auth")
    assert "decrypt" in test.message


def test_reaper_fails_tests_stuck_running_past_the_limit(conn):
    test = diagnostics.connection_test_request(connection=conn)
    long_ago = timezone.now() - timedelta(seconds=diagnostics.RUNNING_LIMIT_S + 1)
    ConnectionTest.objects.filter(pk=test.pk).update(status="running", started_at=long_ago)
    fresh = diagnostics.connection_test_request(connection=conn)
    ConnectionTest.objects.filter(pk=fresh.pk).update(status="running", started_at=timezone.now())
    assert diagnostics.connection_tests_reap() == 1
    test.refresh_from_db()
    assert (test.status, test.error_class) == ("failed", "timeout")
    assert "time limit" in test.message and test.finished_at
    fresh.refresh_from_db()
    assert fresh.status == "running"


def test_reaper_fails_tests_nobody_picked_up(conn):
    test = diagnostics.connection_test_request(connection=conn)
    ConnectionTest.objects.filter(pk=test.pk).update(
        created_at=timezone.now() - timedelta(seconds=diagnostics.PENDING_LIMIT_S + 1))
    diagnostics.connection_tests_reap()
    test.refresh_from_db()
    assert test.status == "failed" and "worker" in test.message


def test_reading_a_stuck_test_reaps_it(conn, staff_client):
    test = diagnostics.connection_test_request(connection=conn)
    ConnectionTest.objects.filter(pk=test.pk).update(
        status="running",
        started_at=timezone.now() - timedelta(seconds=diagnostics.RUNNING_LIMIT_S + 1))
    body = staff_client.get(f"/api/v1/connection-tests/{test.pk}/").json()
    assert (body["status"], body["error_class"]) == ("failed", "timeout")


def test_late_result_does_not_overwrite_a_reaped_test(conn):
    test = diagnostics.connection_test_request(connection=conn)
    test, _ = diagnostics._start(test.pk, "test")
    diagnostics.connection_tests_reap(now=timezone.now() + timedelta(hours=1))
    diagnostics._finish(test, ok=True, message="late", latency_ms=1)
    test.refresh_from_db()
    assert test.status == "failed"


def test_sweep_tests_every_active_connection_and_records_results(upstream, closed_port_url):
    good = [ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
            for _ in range(12)]
    down = ConnectionFactory(base_url=closed_port_url)
    ConnectionFactory(base_url=upstream.openai_url, is_active=False)
    rows = diagnostics.connection_health_sweep(concurrency=5)
    assert len(rows) == 13
    assert upstream.requests_to("/v1/chat").__len__() == 12
    for c in good:
        c.refresh_from_db()
        assert c.status == "ok"
    down.refresh_from_db()
    assert (down.status, down.last_error_class) == ("failed", "unreachable")
    assert ConnectionTest.objects.filter(status__in=["pending", "running"]).count() == 0


def test_sweep_deadline_records_unfinished_tests_as_timed_out(upstream):
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    upstream.set_mode("hang")
    rows = diagnostics.connection_health_sweep(connections=[conn], deadline=0.5, timeout=10)
    assert rows[0].error_class == "timeout"


def test_sweep_is_skipped_while_another_holds_the_lock(conn):
    from django.core.cache import cache

    cache.add(diagnostics.SWEEP_LOCK_KEY, "1", timeout=60)
    try:
        assert diagnostics.connection_health_sweep_locked() is None
    finally:
        cache.delete(diagnostics.SWEEP_LOCK_KEY)
    assert diagnostics.connection_health_sweep_locked() is not None


def test_command_prints_a_table_and_exits_1_on_failures(conn, closed_port_url):
    ConnectionFactory(name="broken", base_url=closed_port_url)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("test_connections", "--all", stdout=out, stderr=err)
    assert exit_.value.code == 1
    text = out.getvalue()
    assert "good" in text and "broken" in text and "unreachable" in text
    assert "1 of 2 connections OK, 1 failed." in text
    assert "2/2" in err.getvalue()  # the progress bar


def test_command_by_name_succeeds(conn):
    out = io.StringIO()
    call_command("test_connections", "good", "--no-progress", stdout=out)
    assert "1 of 1 connections OK." in out.getvalue()


@pytest.mark.parametrize("args", [[], ["nope"], ["good", "--all"]])
def test_command_refuses_bad_arguments(conn, args):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("test_connections", *args)


def test_beat_schedules_the_sweep_and_the_reaper():
    from django_celery_beat.models import PeriodicTask

    tasks = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {"connections.connection_health_sweep", "connections.connection_tests_reap"} <= tasks


def test_in_process_check_for_secret_rotation(conn, upstream):
    probe = Connection(provider=conn.provider, auth_method="api_key", base_url=conn.base_url,
                       default_model="test-model", secrets={"api_key": "wrong-key-123456"})
    outcome = diagnostics.test_connection_settings(probe)
    assert (outcome.ok, outcome.error_class) == (False, "auth")
    assert diagnostics.test_connection_settings(conn).ok
