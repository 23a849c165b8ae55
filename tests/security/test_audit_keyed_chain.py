"""The audit chain is keyed (issue #16): plain SHA-256 with its head in the same database let
whoever can write the database rewrite an event, re-chain and update the head, and
`verify_audit` said intact. Now the chain is HMAC-SHA256 with AUDIT_HMAC_KEY, a checkpoint kept
outside the database catches even a holder of the key, and migration 0003 re-chains old logs."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from audit.chain import GENESIS, canonical, unkeyed_event_hash, values_of
from audit.models import AuditChainHead, AuditEvent
from audit.services import audit_record

ROOT = Path(__file__).resolve().parents[2]


def _raw(sql: str, params=()):
    """Run SQL with the append-only trigger disabled, as an attacker with database access."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


def _rewrite_and_rechain(seq: int, new_name: str, hasher) -> None:
    """Edit event `seq`, recompute every link after it with `hasher`, move the head: the whole
    attack that defeated the unkeyed chain."""
    _raw("UPDATE audit_auditevent SET target_name = %s WHERE seq = %s", [new_name, seq])
    prev = GENESIS
    for event in AuditEvent.objects.order_by("seq"):
        digest = hasher(values_of(event) | {"prev_hash": prev})
        _raw("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
             [prev, digest, event.pk])
        prev = digest
    AuditChainHead.objects.filter(pk=1).update(hash=prev)


def _verify(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def _verify_error(*args) -> str:
    with pytest.raises(CommandError) as info:
        _verify(*args)
    return str(info.value)


@pytest.fixture
def events(db):
    return [audit_record(action="connection.update", target=("connection", f"id-{i}", f"c{i}"))
            for i in range(1, 6)]


def test_rewriting_and_rechaining_with_plain_sha256_is_detected(events):
    _verify()
    _rewrite_and_rechain(2, "not what happened", unkeyed_event_hash)
    assert "event #1" in _verify_error()


def test_rewriting_and_rechaining_with_another_key_is_detected(events):
    def wrong_key(values):
        return hmac.new(b"a-guessed-key", canonical(values), hashlib.sha256).hexdigest()

    _rewrite_and_rechain(3, "not what happened", wrong_key)
    message = _verify_error()
    assert "event #1" in message and "AUDIT_HMAC_KEY" in message


def test_the_chain_hash_is_an_hmac_under_audit_hmac_key(events, settings):
    event = AuditEvent.objects.get(seq=3)
    expected = hmac.new(settings.AUDIT_HMAC_KEY.encode(), canonical(values_of(event)),
                        hashlib.sha256).hexdigest()
    assert event.hash == expected != unkeyed_event_hash(values_of(event))


def test_checkpoint_prints_seq_and_hash_and_verify_accepts_it(events):
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out, stderr=io.StringIO())
    point = out.getvalue().strip()
    assert point == f"5:{AuditEvent.objects.get(seq=5).hash}"
    audit_record(action="connection.update", target=("connection", "id-6", "c6"))
    assert "extends checkpoint #5" in _verify("--checkpoint", point)


def test_checkpoint_catches_a_rewrite_by_someone_holding_the_key(events, settings):
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out, stderr=io.StringIO())
    point = out.getvalue().strip()
    key = settings.AUDIT_HMAC_KEY.encode()

    def real_key(values):
        return hmac.new(key, canonical(values), hashlib.sha256).hexdigest()

    _rewrite_and_rechain(2, "not what happened", real_key)
    _verify()  # the key holder made a consistent chain...
    assert "checkpoint" in _verify_error("--checkpoint", point)  # ...but not the same one


def test_checkpoint_past_the_end_means_events_were_cut_off(events):
    point = f"5:{AuditEvent.objects.get(seq=5).hash}"
    last = AuditEvent.objects.get(seq=5)
    _raw("DELETE FROM audit_auditevent WHERE id = %s", [last.pk])
    prev = AuditEvent.objects.get(seq=4)
    AuditChainHead.objects.filter(pk=1).update(seq=4, hash=prev.hash)
    assert "#5" in _verify_error("--checkpoint", point)


@pytest.mark.parametrize("bad", ["5", "x:abc", "5:" + "z" * 64, "5:abc"])
def test_malformed_checkpoint_is_an_error_not_a_traceback(events, bad):
    assert "SEQ:HASH" in _verify_error("--checkpoint", bad)


@pytest.mark.django_db(transaction=True)
def test_migration_rechains_an_unkeyed_log_under_the_key_and_records_it():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("audit", "0002_append_only_trigger")])
    executor.loader.build_graph()
    try:
        # Three events as the unkeyed code wrote them.
        prev = GENESIS
        for i in range(1, 4):
            event = AuditEvent(seq=i, created_at=timezone.now(), auth_kind="system",
                               action="connection.update", target_name=f"c{i}", prev_hash=prev)
            event.hash = unkeyed_event_hash(values_of(event))
            event.save()
            prev = event.hash
        AuditChainHead.objects.update_or_create(pk=1, defaults={"seq": 3, "hash": prev})
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate([("audit", "0003_keyed_audit_chain")])
    assert "4 event(s) verified" in _verify()
    record = AuditEvent.objects.get(seq=4)
    assert record.action == "audit.rechain"
    assert record.extra["events"] == 3 and record.extra["previous_chain"] == "intact"


def _start(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in {"SECRET_KEY", "FERNET_KEYS", "AUDIT_HMAC_KEY", "DEBUG",
                        "DJANGO_SETTINGS_MODULE"}}
    env.update(env_overrides, DJANGO_SETTINGS_MODULE="llmconn.settings")
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "a-production-secret-key-0123456789abcdef",
              "FERNET_KEYS": "a-production-fernet-key"}


def test_production_start_without_audit_hmac_key_stops_naming_it():
    result = _start(PRODUCTION)
    assert result.returncode != 0 and "AUDIT_HMAC_KEY is not set" in result.stderr


@pytest.mark.parametrize("same_as", ["SECRET_KEY", "FERNET_KEYS"])
def test_audit_hmac_key_must_be_separate_from_the_other_keys(same_as):
    result = _start({**PRODUCTION, "AUDIT_HMAC_KEY": PRODUCTION[same_as]})
    assert result.returncode != 0 and "AUDIT_HMAC_KEY must differ" in result.stderr


def test_production_start_with_its_own_audit_key_passes_checks():
    result = _start({**PRODUCTION, "AUDIT_HMAC_KEY": "a-production-audit-key-0123456789"})
    assert result.returncode == 0, result.stderr


def test_after_the_key_changed_audit_rekey_rechains_under_the_new_key(events, settings,
                                                                      monkeypatch):
    old_key = settings.AUDIT_HMAC_KEY
    old_head = f"5:{AuditEvent.objects.get(seq=5).hash}"
    settings.AUDIT_HMAC_KEY = "a-new-audit-key-after-a-leak"
    assert "AUDIT_HMAC_KEY" in _verify_error()  # what a changed key looks like

    monkeypatch.setenv("AUDIT_HMAC_PREVIOUS_KEY", "not-the-old-key")
    with pytest.raises(CommandError):
        call_command("audit_rekey", stdout=io.StringIO())
    assert "AUDIT_HMAC_KEY" in _verify_error()  # nothing was re-keyed

    monkeypatch.setenv("AUDIT_HMAC_PREVIOUS_KEY", old_key)
    call_command("audit_rekey", stdout=io.StringIO())
    assert "6 event(s) verified" in _verify()
    record = AuditEvent.objects.get(seq=6)
    assert record.action == "audit.rekey" and record.extra["previous_head"] == old_head
    assert old_key not in str(record.extra)
