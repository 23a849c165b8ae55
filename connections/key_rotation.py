"""Encryption-key rotation: re-encrypt every encrypted column under the primary Fernet key.

(Rotating a *provider's* API key is `connections/secret_rotation.py`.)

Online and safe to interrupt: rows are read raw (never through the field, which decrypts) in
primary-key order, in batches, each batch committed on its own; each row is written back with a
compare-and-set (`UPDATE ... WHERE pk = ? AND <column> = <old ciphertext>`), so a row that an
admin saved in the meantime (already under the primary key) is left alone. Rows done carry the
primary key's id in their `*_key_id` column, so a rerun picks up only what is left, and a
second rerun finds nothing to do. Afterwards every stored value is decrypted with the primary
key alone; rows that fail are reported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.db import connection as db, transaction

from .crypto import Keyring, keyring
from .fields import EncryptedSecretsField

DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class EncryptedColumn:
    """One encrypted column and the column that records its key id."""

    model: type
    field_name: str
    table: str
    pk_column: str
    column: str
    key_id_column: str

    @property
    def label(self) -> str:
        return f"{self.model._meta.label}.{self.field_name}"


def encrypted_columns() -> list[EncryptedColumn]:
    """Every EncryptedSecretsField of every installed model."""
    found = []
    for model in apps.get_models():
        opts = model._meta
        for f in opts.concrete_fields:
            if isinstance(f, EncryptedSecretsField):
                found.append(EncryptedColumn(
                    model=model, field_name=f.name, table=opts.db_table,
                    pk_column=opts.pk.column, column=f.column,
                    key_id_column=opts.get_field(f.key_id_field).column,
                ))
    return sorted(found, key=lambda c: c.label)


@dataclass
class RotationResult:
    """What a rotation run did and found."""

    dry_run: bool = False
    primary_id: str = ""
    to_do: int = 0
    re_encrypted: int = 0
    relabelled: int = 0  # already under the primary key; only the key id column was stale
    changed_meanwhile: int = 0  # compare-and-set found a newer value: left as it is
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (column label, pk)
    not_on_primary: list[tuple[str, str]] = field(default_factory=list)  # after verification

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.not_on_primary


ProgressFn = Callable[[int, int, str], None]


def _pk_str(col: EncryptedColumn, raw) -> str:
    """A raw primary key as people know it (UUIDs with dashes on every database)."""
    return str(col.model._meta.pk.to_python(raw))


def _q(name: str) -> str:
    return db.ops.quote_name(name)


def count_not_on_primary(col: EncryptedColumn, primary_id: str) -> int:
    """Rows of a column whose recorded key is not the primary one."""
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {_q(col.table)} WHERE {_q(col.column)} IS NOT NULL "
            f"AND {_q(col.key_id_column)} <> %s", [primary_id])
        return cursor.fetchone()[0]


def _read_batch(col: EncryptedColumn, primary_id: str, after, size: int) -> list[tuple]:
    """Up to `size` raw rows (pk, ciphertext bytes, recorded key id) not on the primary key,
    after pk `after`."""
    sql = (f"SELECT {_q(col.pk_column)}, {_q(col.column)}, {_q(col.key_id_column)} "
           f"FROM {_q(col.table)} "
           f"WHERE {_q(col.column)} IS NOT NULL AND {_q(col.key_id_column)} <> %s")
    params: list = [primary_id]
    if after is not None:
        sql += f" AND {_q(col.pk_column)} > %s"
        params.append(after)
    sql += f" ORDER BY {_q(col.pk_column)} LIMIT %s"
    params.append(size)
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return [(pk, bytes(token), key_id) for pk, token, key_id in cursor.fetchall()]


def _digest(token: bytes) -> bytes:
    return hashlib.blake2b(token, digest_size=16).digest()


def _decrypt(ring: Keyring, token: bytes, recorded_id: str | None) -> tuple[bytes, str]:
    """`ring.decrypt`, trying first the key the row says encrypted it (one failed HMAC check
    less per row when that is not the primary key)."""
    if recorded_id in ring.ids and recorded_id != ring.primary_id:
        try:
            return ring.fernets[ring.ids.index(recorded_id)].decrypt(token), recorded_id
        except InvalidToken:
            pass
    return ring.decrypt(token)


def _compare_and_set(col: EncryptedColumn, pk, old: bytes, new: bytes, key_id: str) -> bool:
    """Write `new` only if the row still holds `old`; True if it did."""
    with db.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_q(col.table)} SET {_q(col.column)} = %s, {_q(col.key_id_column)} = %s "
            f"WHERE {_q(col.pk_column)} = %s AND {_q(col.column)} = %s",
            [db.Database.Binary(new), key_id, pk, db.Database.Binary(old)])
        return cursor.rowcount == 1


def _compare_and_set_many(col: EncryptedColumn, writes: list[tuple], key_id: str) -> set:
    """`_compare_and_set` for a whole batch in one statement (PostgreSQL: UPDATE ... FROM
    unnest(arrays) ... RETURNING): the pks of the rows that still held their old value. One
    round trip per batch instead of one per row. The `pk = ANY(...)` condition lets the planner
    reach the batch's rows through the primary key index: joined with a VALUES list alone it
    chose a hash join over a sequential scan of the whole table for every batch (quadratic
    in the table size)."""
    pk_type = col.model._meta.pk.db_type(db)
    pks = [pk for pk, _old, _new, _counter in writes]
    olds = [db.Database.Binary(old) for _pk, old, _new, _counter in writes]
    news = [db.Database.Binary(new) for _pk, _old, new, _counter in writes]
    sql = (f"UPDATE {_q(col.table)} AS t SET {_q(col.column)} = v.new, "
           f"{_q(col.key_id_column)} = %s "
           f"FROM unnest(%s::{pk_type}[], %s::bytea[], %s::bytea[]) AS v(pk, old, new) "
           f"WHERE t.{_q(col.pk_column)} = ANY(%s::{pk_type}[]) "
           f"AND t.{_q(col.pk_column)} = v.pk AND t.{_q(col.column)} = v.old "
           f"RETURNING t.{_q(col.pk_column)}")
    with db.cursor() as cursor:
        cursor.execute(sql, [key_id, pks, olds, news, pks])
        return {row[0] for row in cursor.fetchall()}


def _write_batch(col: EncryptedColumn, writes: list[tuple], key_id: str) -> set:
    """Compare-and-set a batch in one transaction; the pks written."""
    with transaction.atomic():
        if db.vendor == "postgresql":
            return _compare_and_set_many(col, writes, key_id)
        return {pk for pk, old, new, _ in writes if _compare_and_set(col, pk, old, new, key_id)}


def _rotate_column(col: EncryptedColumn, ring: Keyring, result: RotationResult, *,
                   batch_size: int, dry_run: bool, progress: ProgressFn | None, done: int,
                   known: dict) -> int:
    """Re-encrypt one column batch by batch. `known` gets {pk: digest} of every value written
    (the verification does not decrypt those again while they are unchanged).

    On PostgreSQL outside a transaction (the command), each batch is written by a second
    thread on its own connection while this one decrypts and encrypts the next batch: the
    database's work on a batch (a new row version and ten index entries per row) and Fernet's
    overlap instead of adding up. Inside a transaction (tests), batches are written in turn.
    """
    pending = None  # (future, writes) of the batch being written

    def account(writes: list[tuple], written: set) -> None:
        for pk, _old, new, counter in writes:
            if pk in written:
                setattr(result, counter, getattr(result, counter) + 1)
                known[pk] = _digest(new)
            else:
                result.changed_meanwhile += 1

    executor = None
    if not dry_run and db.vendor == "postgresql" and not db.in_atomic_block:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rotate-keys")
    after = None
    try:
        while True:
            rows = _read_batch(col, ring.primary_id, after, batch_size)
            if not rows:
                break
            writes = []  # (pk, old ciphertext, new ciphertext, counter)
            for pk, token, recorded_id in rows:
                try:
                    plaintext, used = _decrypt(ring, token, recorded_id)
                except InvalidToken:
                    result.unreadable.append((col.label, _pk_str(col, pk)))
                    continue
                if dry_run:
                    continue
                if used == ring.primary_id:
                    writes.append((pk, token, token, "relabelled"))
                else:
                    writes.append((pk, token, ring.encrypt(plaintext), "re_encrypted"))
            if pending is not None:
                account(pending[1], pending[0].result())
                pending = None
            if writes and executor is not None:
                pending = (executor.submit(_write_batch, col, writes, ring.primary_id), writes)
            elif writes:
                account(writes, _write_batch(col, writes, ring.primary_id))
            after = rows[-1][0]
            done += len(rows)
            if progress:
                progress(done, result.to_do, col.label)
        if pending is not None:
            account(pending[1], pending[0].result())
            pending = None
    finally:
        if executor is not None:
            if pending is not None:
                pending[0].exception()  # wait for it; the error (if any) is raised already
            executor.submit(lambda: db.close()).result()  # that thread's own connection
            executor.shutdown()
    return done


def verify_primary_only(col: EncryptedColumn, ring: Keyring, *, batch_size: int,
                        known: dict | None = None) -> list[str]:
    """Pks of rows whose value the primary key alone cannot decrypt (or whose key id is stale).

    `known`: {pk: digest of the value} this run wrote with the primary key; a row still holding
    exactly that value is not decrypted again (every other row is)."""
    known = known or {}
    primary = ring.fernets[0]
    bad, after = [], None
    while True:
        sql = (f"SELECT {_q(col.pk_column)}, {_q(col.column)}, {_q(col.key_id_column)} "
               f"FROM {_q(col.table)} WHERE {_q(col.column)} IS NOT NULL")
        params: list = []
        if after is not None:
            sql += f" AND {_q(col.pk_column)} > %s"
            params.append(after)
        sql += f" ORDER BY {_q(col.pk_column)} LIMIT %s"
        params.append(batch_size)
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            return bad
        for pk, token, key_id in rows:
            token = bytes(token)
            if key_id == ring.primary_id and known.get(pk) == _digest(token):
                continue
            try:
                primary.decrypt(token)
            except InvalidToken:
                bad.append(_pk_str(col, pk))
                continue
            if key_id != ring.primary_id:
                bad.append(_pk_str(col, pk))
        after = rows[-1][0]


def rotate_keys(*, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False,
                progress: ProgressFn | None = None) -> RotationResult:
    """Re-encrypt every encrypted value not on the primary key, then verify with it alone.

    Records a `keys.rotate` audit event for real runs (not for dry runs).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    ring = keyring()
    columns = encrypted_columns()
    result = RotationResult(dry_run=dry_run, primary_id=ring.primary_id)
    result.to_do = sum(count_not_on_primary(c, ring.primary_id) for c in columns)
    done = 0
    known: dict[str, dict] = {}
    for col in columns:
        known[col.label] = {}
        done = _rotate_column(col, ring, result, batch_size=batch_size, dry_run=dry_run,
                              progress=progress, done=done, known=known[col.label])
    if not dry_run:
        unreadable = set(result.unreadable)
        for col in columns:
            for pk in verify_primary_only(col, ring, batch_size=batch_size,
                                          known=known[col.label]):
                if (col.label, pk) not in unreadable:
                    result.not_on_primary.append((col.label, pk))
        _record(result)
    return result


def _record(result: RotationResult) -> None:
    from audit.services import audit_record

    audit_record(
        action="keys.rotate",
        target=("keyring", result.primary_id, "FERNET_KEYS"),
        outcome="success" if result.ok else "failed",
        extra={"to_do": result.to_do, "re_encrypted": result.re_encrypted,
               "relabelled": result.relabelled, "changed_meanwhile": result.changed_meanwhile,
               "unreadable": len(result.unreadable), "not_on_primary": len(result.not_on_primary)},
    )


def key_usage() -> list[dict]:
    """Rows per key id for every encrypted column: [{"column", "key_id", "rows", "status"}].

    status: "primary", "configured" (an older key still in FERNET_KEYS) or "not configured"
    (a key id no configured key has; those rows cannot be read). An old key may be removed from
    FERNET_KEYS only when no row is on it.
    """
    ring = keyring()
    rows = []
    for col in encrypted_columns():
        with db.cursor() as cursor:
            cursor.execute(
                f"SELECT {_q(col.key_id_column)}, COUNT(*) FROM {_q(col.table)} "
                f"WHERE {_q(col.column)} IS NOT NULL GROUP BY {_q(col.key_id_column)} "
                f"ORDER BY {_q(col.key_id_column)}")
            for key_id, count in cursor.fetchall():
                if key_id == ring.primary_id:
                    status = "primary"
                elif key_id in ring.ids:
                    status = "configured"
                else:
                    status = "not configured"
                rows.append({"column": col.label, "key_id": key_id or "(none recorded)",
                             "rows": count, "status": status})
    return rows
