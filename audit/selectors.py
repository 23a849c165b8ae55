"""Reads of the audit log: filtered listings and the chain check."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q, QuerySet

from .chain import GENESIS, chain_key, event_hash, values_of
from .models import AuditChainHead, AuditEvent


def audit_event_list(*, target: str | None = None, action: str | None = None) -> QuerySet[AuditEvent]:
    """Events, newest first. `target`: an id, a name, or "type:id"; `action`: exact, or a
    prefix ending in "." ("connection.")."""
    qs = AuditEvent.objects.all()
    if target:
        if ":" in target:
            kind, _, ident = target.partition(":")
            qs = qs.filter(target_type=kind, target_id=ident)
        else:
            qs = qs.filter(Q(target_id=target) | Q(target_name=target))
    if action:
        qs = qs.filter(action__startswith=action) if action.endswith(".") else qs.filter(action=action)
    return qs.order_by("-seq")


@dataclass(frozen=True)
class ChainProblem:
    """The first place where the audit chain does not hold."""

    seq: int | None
    event_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"event #{self.seq} (id {self.event_id})" if self.seq is not None else "chain"
        return f"{where}: {self.reason}"


def audit_chain_head() -> tuple[int, str]:
    """(seq, hash) of the last event: a checkpoint to keep outside the database."""
    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    return (last["seq"], last["hash"]) if last else (0, GENESIS)


def parse_checkpoint(text: str) -> tuple[int, str]:
    """"SEQ:HASH" (as audit_checkpoint prints it) -> (seq, hash); ValueError if malformed."""
    seq, sep, digest = (text or "").strip().partition(":")
    digest = digest.lower()
    if not sep or not seq.isdigit() or len(digest) != 64 or \
            any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("A checkpoint is SEQ:HASH as printed by audit_checkpoint, e.g. "
                         "42:" + "0" * 64 + ".")
    return int(seq), digest


def audit_chain_verify(*, chunk_size: int = 2000, checkpoint: tuple[int, str] | None = None,
                       key: bytes | None = None) -> tuple[int, ChainProblem | None]:
    """Walk the chain in order; (events checked, first problem or None).

    Detects edited events (HMAC mismatch), deleted ones (a gap in seq, a broken prev_hash link
    or a chain head past the last event) and reordered ones (prev_hash links or id order not
    following seq). With `checkpoint` (seq, hash) kept from an earlier `audit_checkpoint`,
    also proves that the log still extends it: the event at that seq carries that hash, so a
    log rewritten and re-chained even with the key is found. `key`: verify under another
    key than AUDIT_HMAC_KEY (the previous one, before re-keying).
    """
    key = key if key is not None else chain_key()
    expected_seq, prev_hash, prev_id, count = 1, GENESIS, None, 0
    last_seq = 0
    while True:
        batch = list(AuditEvent.objects.filter(seq__gte=expected_seq).order_by("seq")[:chunk_size])
        if not batch:
            break
        for event in batch:
            count += 1
            if event.seq != expected_seq:
                return count, ChainProblem(event.seq, event.id,
                                           f"event #{expected_seq} is missing (deleted?)")
            if event.prev_hash != prev_hash:
                return count, ChainProblem(event.seq, event.id,
                                           "does not follow the previous event (deleted or reordered)")
            if event_hash(values_of(event), key=key) != event.hash:
                return count, ChainProblem(
                    event.seq, event.id, "content was changed after it was written (or "
                    "AUDIT_HMAC_KEY is not the key the chain was written with)")
            if checkpoint is not None and event.seq == checkpoint[0] \
                    and event.hash != checkpoint[1]:
                return count, ChainProblem(
                    event.seq, event.id, "does not match the checkpoint: the log up to it was "
                    "rewritten and re-chained")
            if prev_id is not None and event.id < prev_id:
                return count, ChainProblem(event.seq, event.id, "is out of order (reordered)")
            prev_hash, prev_id, last_seq = event.hash, event.id, event.seq
            expected_seq += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.seq, head.hash or GENESIS) != (last_seq, prev_hash):
        if head.seq > last_seq:
            return count, ChainProblem(head.seq, None,
                                       f"events after #{last_seq} are missing (the chain head is at #{head.seq})")
        return count, ChainProblem(last_seq, prev_id, "the chain head does not match the last event")
    if head is None and count:
        return count, ChainProblem(None, None, "the chain head row is missing")
    if checkpoint is not None and checkpoint[0] > last_seq:
        return count, ChainProblem(
            checkpoint[0], None, f"the checkpoint is past the last event #{last_seq}: events "
            "after it were removed")
    if checkpoint is not None and checkpoint[0] == 0 and checkpoint[1] != GENESIS:
        return count, ChainProblem(None, None, "the checkpoint is not of this log")
    return count, None
