"""Schema fuzzing with schemathesis: every operation of /api/schema/, called in-process (WSGI)
with generated data as staff and as a workspace member, answers without a 5xx and with bodies
that conform to the schema.

Bounded so the suite stays fast: FUZZ_EXAMPLES examples per operation (environment
`LLMCONN_FUZZ_EXAMPLES`, default 8; raise it for a deeper run), no example database on disk.
Requests run inside the test's transaction, so the data they create is rolled back; tests
and discoveries are only queued (no commit, no task), so nothing is called upstream.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from audit.models import AuditEvent
from connections.models import ConnectionTest
from tests.factories import ConnectionFactory
from workspaces import services
from workspaces.models import Budget, Membership, MemberRole

pytestmark = pytest.mark.django_db

FUZZ_EXAMPLES = int(os.environ.get("LLMCONN_FUZZ_EXAMPLES", "8"))
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """Calls go to the WSGI app directly, whose request_started/finished signals would recycle
    the test's database connection (it is inside the test transaction); Django's own test
    client disconnects close_old_connections the same way."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def schema(settings, wsgi_keeps_the_test_connection, world):
    from llmconn.wsgi import application

    settings.ALLOWED_HOSTS = ["localhost", "testserver"]  # schemathesis' WSGI client: localhost
    # The schema is for signed-in users only.
    return schemathesis.openapi.from_wsgi(
        "/api/schema/", application,
        headers={"Authorization": f"Token {world['tokens']['member']}"})


@pytest.fixture
def world(db) -> dict:
    User = get_user_model()
    staff = User.objects.create_user("fuzz-staff", password="pw-fuzz-staff-1", is_staff=True,
                                     is_superuser=True)
    member = User.objects.create_user("fuzz-member", password="pw-fuzz-member-1")
    conn = ConnectionFactory(name="fuzzed")
    workspace = services.workspace_create(name="Fuzz", slug="fuzz",
                                          bindings={"chat": {"connection": str(conn.pk)}})
    membership = Membership.objects.create(workspace=workspace, user=member,
                                           role=MemberRole.MEMBER)
    key, _ = services.api_key_create(workspace=workspace, name="k")
    test = ConnectionTest.objects.create(kind="test", connection=conn, provider=conn.provider,
                                         auth_method=conn.auth_method, status="failed")
    budget = Budget.objects.create(scope="workspace", workspace=workspace, limit=10)
    return {
        "tokens": {"staff": Token.objects.create(user=staff).key,
                   "member": Token.objects.create(user=member).key},
        # Real ids for path parameters, half of the examples: detail endpoints get exercised
        # past their 404.
        "ids": {"connections": str(conn.pk), "connection-tests": str(test.pk),
                "budgets": str(budget.pk), "audit-events": str(AuditEvent.objects.first().pk),
                "slug": "fuzz", "role": "chat", "name": "openai", "key_id": str(key.pk),
                "member_id": str(membership.pk)},
    }


def operations(schema):
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


@pytest.mark.parametrize("role", ["staff", "member"])
def test_every_operation_answers_generated_requests_without_5xx_and_as_documented(
        schema, world, role):
    headers = {"Authorization": f"Token {world['tokens'][role]}"}

    def ids(path: str, name: str, value):
        known = world["ids"]
        if name == "pk":
            return next((v for k, v in known.items() if f"/{k}/" in path), value)
        return known.get(name, value)

    ops = operations(schema)
    assert len(ops) >= 40, "the schema lost operations"
    failures = []
    for operation in ops:
        @hypothesis_settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                             derandomize=True, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), known=st.booleans())
        def fuzz(case, known):
            if known and case.path_parameters:
                case.path_parameters = {k: ids(operation.path, k, v)
                                        for k, v in case.path_parameters.items()}
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported together below
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)

