"""PostgreSQL guarantees: the trigger refuses UPDATE/DELETE; concurrent writers keep one chain."""

import threading

import pytest
from django.db import DatabaseError, connection, connections, transaction

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_record

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="needs PostgreSQL (DATABASE_URL): the trigger and advisory lock "
                              "exist only there"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("sql", [
    "UPDATE audit_auditevent SET action = 'x'",
    "DELETE FROM audit_auditevent",
])
def test_trigger_refuses_raw_update_and_delete(sql):
    audit_record(action="test.event", target=("thing", 1, "x"))
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditEvent.objects.get().action == "test.event"


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_valid_chain():
    writers, per_writer = 6, 15
    errors = []
    start = threading.Barrier(writers)

    def write(n):
        try:
            start.wait()
            for i in range(per_writer):
                with transaction.atomic():
                    audit_record(action="test.concurrent", target=("writer", n, f"w{n}-{i}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    checked, problem = audit_chain_verify()
    assert problem is None
    assert checked == writers * per_writer
