"""Re-chain the existing audit events under AUDIT_HMAC_KEY (the chain was plain SHA-256, which
anyone able to write the database could recompute) and record that it was done.

The old chain is verified first; the result ("intact" or where it was broken) goes into the
`audit.rechain` event appended at the end, so re-keying never hides earlier tampering. On an
empty log nothing is re-chained and nothing is recorded. On PostgreSQL the append-only trigger
is disabled for the rewrite and enabled again in the same transaction.
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from audit.chain import GENESIS, HASHED_FIELDS, event_hash, unkeyed_event_hash

TRIGGER = "audit_event_append_only"


def _values(event) -> dict:
    return {name: getattr(event, name) for name in HASHED_FIELDS}


def _set_trigger(schema_editor, enabled: bool) -> None:
    if schema_editor.connection.vendor == "postgresql":
        action = "ENABLE" if enabled else "DISABLE"
        schema_editor.execute(f"ALTER TABLE audit_auditevent {action} TRIGGER {TRIGGER}")


def _rechain(apps, schema_editor, *, old_hash, new_hash, record: bool) -> None:
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditChainHead = apps.get_model("audit", "AuditChainHead")
    events = list(AuditEvent.objects.order_by("seq"))
    if not events:
        return
    # 1. What the old chain said (before anything is rewritten).
    previous, prev = "intact", GENESIS
    for expected, event in enumerate(events, start=1):
        if event.seq != expected or event.prev_hash != prev or \
                old_hash(_values(event)) != event.hash:
            previous = f"broken at event #{event.seq} before re-chaining"
            break
        prev = event.hash
    # 2. Rewrite every link under the new hash, in order.
    _set_trigger(schema_editor, enabled=False)
    try:
        prev = GENESIS
        for event in events:
            event.prev_hash = prev
            event.hash = new_hash(_values(event))
            AuditEvent.objects.filter(pk=event.pk).update(prev_hash=event.prev_hash,
                                                          hash=event.hash)
            prev = event.hash
    finally:
        _set_trigger(schema_editor, enabled=True)
    last_seq = events[-1].seq
    # 3. Record it in the chain itself.
    if record:
        event = AuditEvent(
            seq=last_seq + 1, created_at=timezone.now(), actor_id=None, actor_name="",
            auth_kind="system", ip=None, user_agent="", action="audit.rechain",
            target_type="audit", target_id="", target_name="audit chain", outcome="success",
            changed_fields=[], secret_fingerprints={},
            extra={"events": len(events), "algorithm": "hmac-sha256",
                   "previous_chain": previous, "migration": "audit.0003"},
            prev_hash=prev,
        )
        event.hash = new_hash(_values(event))
        event.save(force_insert=True)
        last_seq, prev = event.seq, event.hash
    AuditChainHead.objects.update_or_create(pk=1, defaults={"seq": last_seq, "hash": prev})


def forwards(apps, schema_editor):
    key = settings.AUDIT_HMAC_KEY.encode()
    _rechain(apps, schema_editor, old_hash=unkeyed_event_hash,
             new_hash=lambda values: event_hash(values, key=key), record=True)


def backwards(apps, schema_editor):
    key = settings.AUDIT_HMAC_KEY.encode()
    _rechain(apps, schema_editor, old_hash=lambda values: event_hash(values, key=key),
             new_hash=unkeyed_event_hash, record=False)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_append_only_trigger")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
