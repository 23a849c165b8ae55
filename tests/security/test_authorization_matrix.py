"""Who may call what: every URL pattern of the URL conf against every kind of caller.

`API` is the table: one row per (endpoint, method) with the status each role gets. Roles
authenticate the way real clients do (a DRF token; a session for the admin), so an inactive
user's token is refused by authentication itself. The URL conf is walked with
`get_resolver()`; a pattern that no row, admin kind or listed page classifies fails
`test_every_url_pattern_is_classified`, so a new endpoint cannot be forgotten.

Beyond the user roles: a workspace API key used for another workspace's models, a revoked
key, a deleted user's token, and a workspace key sent to the staff API.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
from asgiref.sync import async_to_sync
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEvent
from connections.models import Connection, ConnectionTest
from tests.asgi_client import AsgiClient
from tests.factories import ConnectionFactory
from workspaces import services
from workspaces.models import (
    Membership,
    MemberRole,
    SystemDefault,
    Workspace,
    WorkspaceAPIKey,
    WorkspaceBinding,
)

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "inactive", "plain", "member", "manager", "staff")


@dataclass
class World:
    """Everything the rows point at, and each role's token."""

    tokens: dict
    users: dict
    conn: object  # bound to alpha's chat role
    spare: object  # bound to nothing
    test_id: str
    workspace: Workspace
    key_id: int
    member_id: int
    audit_id: int
    budget_id: int
    mine: object = None  # plain's personal connection
    mine_test_id: str = ""
    my_key_id: int = 0  # plain's personal gateway key


@pytest.fixture
def world(db) -> World:
    User = get_user_model()
    users = {
        "inactive": User.objects.create_user("inactive", password="pw-inactive-123",
                                             is_active=False),
        "plain": User.objects.create_user("plain", password="pw-plain-123"),
        "member": User.objects.create_user("member", password="pw-member-123"),
        "manager": User.objects.create_user("manager", password="pw-manager-123"),
        "staff": User.objects.create_user("staff", password="pw-staff-123", is_staff=True,
                                          is_superuser=True),
    }
    tokens = {role: Token.objects.create(user=user).key for role, user in users.items()}
    conn = ConnectionFactory(name="bound")
    spare = ConnectionFactory(name="spare")
    workspace = services.workspace_create(
        name="Alpha", slug="alpha", bindings={"chat": {"connection": str(conn.pk)}})
    member = Membership.objects.create(workspace=workspace, user=users["member"],
                                       role=MemberRole.MEMBER)
    Membership.objects.create(workspace=workspace, user=users["manager"],
                              role=MemberRole.MANAGER)
    key, _ = services.api_key_create(workspace=workspace, name="k")
    SystemDefault.objects.create(role="chat", connection=conn)
    test = ConnectionTest.objects.create(kind="test", connection=conn, provider=conn.provider,
                                         auth_method=conn.auth_method, status="failed")
    from workspaces.models import Budget

    budget = Budget.objects.create(scope="workspace", workspace=workspace, period="month",
                                   metric="cost", limit=10)
    Group.objects.create(name="group")
    # People and defaults: "plain" owns a personal connection and a personal key; every user
    # has a default for chat (so that DELETE /me/defaults/chat/ has something to remove).
    mine = ConnectionFactory(name="mine", owner=users["plain"])
    mine_test = ConnectionTest.objects.create(kind="test", connection=mine,
                                              provider=mine.provider,
                                              auth_method=mine.auth_method, status="failed")
    my_key, _ = services.personal_api_key_create(user=users["plain"], name="mine")
    from workspaces.models import UserDefault

    for user in users.values():
        UserDefault.objects.create(user=user, role="chat", connection=conn)
    return World(tokens=tokens, users=users, conn=conn, spare=spare, test_id=str(test.pk),
                 workspace=workspace, key_id=key.pk, member_id=member.pk,
                 audit_id=AuditEvent.objects.order_by("id").first().pk, budget_id=budget.pk,
                 mine=mine, mine_test_id=str(mine_test.pk), my_key_id=my_key.pk)


def api_client(world: World, role: str) -> APIClient:
    client = APIClient()
    if role != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens[role]}")
    return client


C = "/api/v1/connections/"
W = "/api/v1/workspaces/alpha/"
NEW_KEY = {"credentials": {"api_key": "sk-rotated-0123456789abcdef"}}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}

Path = Callable[[World], str]
Body = Callable[[World], dict] | dict | None


@dataclass(frozen=True)
class Row:
    name: str  # the URL name (or pattern, for unnamed ones) the row classifies
    method: str
    path: Path
    body: Body
    expect: tuple[int, int, int, int, int, int]  # anonymous, inactive, plain, member, manager, staff


def _c(w):
    return f"{C}{w.conn.pk}/"


def _s(w):
    return f"{C}{w.spare.pk}/"


def _m(w):
    return f"{C}{w.mine.pk}/"


# (anonymous, inactive, plain, member, manager, staff)
PUBLIC = (200, 200, 200, 200, 200, 200)
SIGNED_IN = (401, 401, 200, 200, 200, 200)
STAFF = lambda ok: (401, 401, 403, 403, 403, ok)  # noqa: E731
MANAGER_READS = (401, 401, 403, 403, 200, 200)
# A personal connection of "plain": the owner acts, other users get 404 (not disclosed),
# staff see metadata (reads) and are refused the rest (403).
OWNER = lambda ok, staff=403: (401, 401, ok, 404, 404, staff)  # noqa: E731
GATEWAY = (401, 401, 401, 401, 401, 401)  # a user's DRF token is not a workspace API key

API = [
    Row("healthz", "GET", lambda w: "/healthz", None, PUBLIC),
    Row("readyz", "GET", lambda w: "/readyz", None, PUBLIC),
    # Prometheus scrapes: staff, or an address in LLMCONN_METRICS_ALLOW (empty here).
    Row("metrics", "GET", lambda w: "/metrics", None, STAFF(200)),
    # Signed-in users only (issue #16); the docs page sends others to the login page.
    Row("schema", "GET", lambda w: "/api/schema/", None, SIGNED_IN),
    Row("swagger-ui", "GET", lambda w: "/api/docs/", None, (302, 302, 200, 200, 200, 200)),
    Row("login", "GET", lambda w: "/api-auth/login/", None, PUBLIC),
    Row("logout", "POST", lambda w: "/api-auth/logout/", None, PUBLIC),
    Row("provider-list", "GET", lambda w: "/api/v1/providers/", None, SIGNED_IN),
    Row("provider-detail", "GET", lambda w: "/api/v1/providers/openai/", None, SIGNED_IN),
    Row("preset-list", "GET", lambda w: "/api/v1/presets/", None, SIGNED_IN),
    # With personal connections on (the default) every signed-in user reads the active shared
    # connections (as managers do) and creates personal ones (staff create shared ones).
    Row("connection-list", "GET", lambda w: C, None, SIGNED_IN),
    Row("connection-list", "POST", lambda w: C, {"name": "new", "provider": "openai",
                                                 "credentials": {"api_key": "sk-" + "n" * 20}},
        (401, 401, 201, 201, 201, 201)),
    Row("connection-from-preset", "POST", lambda w: f"{C}from-preset/",
        {"preset": "ollama", "name": "n"}, (401, 401, 201, 201, 201, 201)),
    Row("connection-detail", "GET", _c, None, SIGNED_IN),
    Row("connection-detail", "PATCH", _c, {"default_model": "x"}, STAFF(200)),
    Row("connection-detail", "PUT", _s, lambda w: {
        "name": "spare", "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": w.spare.base_url}, STAFF(200)),
    Row("connection-detail", "DELETE", _s, None, STAFF(204)),
    Row("connection-set-default", "POST", lambda w: f"{_c(w)}set-default/", None, STAFF(200)),
    Row("connection-dependents", "GET", lambda w: f"{_c(w)}dependents/", None, STAFF(200)),
    Row("connection-move-bindings", "POST", lambda w: f"{_c(w)}move-bindings/",
        lambda w: {"to": str(w.spare.pk)}, STAFF(200)),
    # The new key is tested first and fails (nothing listens on the factory's URL): 400.
    Row("connection-rotate-secret", "POST", lambda w: f"{_c(w)}rotate-secret/", NEW_KEY,
        STAFF(400)),
    Row("connection-rollback-secret", "POST", lambda w: f"{_c(w)}rollback-secret/", None,
        STAFF(409)),
    Row("connection-test", "POST", lambda w: f"{_c(w)}test/", {}, STAFF(202)),
    Row("connection-discover-models", "POST", lambda w: f"{_c(w)}discover-models/", None,
        STAFF(202)),
    Row("connection-models", "GET", lambda w: f"{_c(w)}models/", None, SIGNED_IN),
    # Non-staff list only their own connections' tests (and their unsaved ones).
    Row("connection-tests", "GET", lambda w: "/api/v1/connection-tests/", None, SIGNED_IN),
    Row("connection-tests", "POST", lambda w: "/api/v1/connection-tests/",
        lambda w: {"connection": str(w.conn.pk)}, STAFF(202)),
    Row("connection-test-detail", "GET", lambda w: f"/api/v1/connection-tests/{w.test_id}/",
        None, (401, 401, 404, 404, 404, 200)),
    # "plain"'s personal connection: everything as for a shared one, for its owner only.
    Row("connection-detail", "GET", _m, None, OWNER(200, staff=200)),
    Row("connection-detail", "PATCH", _m, {"default_model": "x"}, OWNER(200)),
    Row("connection-detail", "PATCH", _m, {"is_active": False}, OWNER(200, staff=200)),
    Row("connection-detail", "PUT", _m, lambda w: {
        "name": "mine", "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": w.mine.base_url}, OWNER(200)),
    Row("connection-detail", "DELETE", _m, None, OWNER(204)),
    Row("connection-set-default", "POST", lambda w: f"{_m(w)}set-default/", None,
        (401, 401, 403, 403, 403, 403)),
    Row("connection-dependents", "GET", lambda w: f"{_m(w)}dependents/", None,
        OWNER(200, staff=200)),
    Row("connection-move-bindings", "POST", lambda w: f"{_m(w)}move-bindings/",
        lambda w: {"to": str(w.spare.pk)}, (401, 401, 403, 403, 403, 403)),
    Row("connection-rotate-secret", "POST", lambda w: f"{_m(w)}rotate-secret/", NEW_KEY,
        OWNER(400)),
    Row("connection-rollback-secret", "POST", lambda w: f"{_m(w)}rollback-secret/", None,
        OWNER(409)),
    Row("connection-test", "POST", lambda w: f"{_m(w)}test/", {}, OWNER(202)),
    Row("connection-discover-models", "POST", lambda w: f"{_m(w)}discover-models/", None,
        OWNER(202)),
    Row("connection-models", "GET", lambda w: f"{_m(w)}models/", None, OWNER(200, staff=200)),
    Row("connection-tests", "POST", lambda w: "/api/v1/connection-tests/",
        lambda w: {"connection": str(w.mine.pk)}, OWNER(202)),
    Row("connection-test-detail", "GET",
        lambda w: f"/api/v1/connection-tests/{w.mine_test_id}/", None, OWNER(200, staff=200)),
    # The caller's own defaults and personal gateway keys.
    Row("me-default", "GET", lambda w: "/api/v1/me/defaults/chat/", None, SIGNED_IN),
    Row("me-default", "PUT", lambda w: "/api/v1/me/defaults/chat/",
        lambda w: {"connection": str(w.conn.pk), "model": "m"}, SIGNED_IN),
    Row("me-default", "PUT", lambda w: "/api/v1/me/defaults/agent/",
        lambda w: {"connection": str(w.mine.pk)}, (401, 401, 200, 400, 400, 400)),
    Row("me-default", "DELETE", lambda w: "/api/v1/me/defaults/chat/", None,
        (401, 401, 204, 204, 204, 204)),
    Row("me-api-keys", "GET", lambda w: "/api/v1/me/api-keys/", None, SIGNED_IN),
    Row("me-api-keys", "POST", lambda w: "/api/v1/me/api-keys/", {"name": "k"},
        (401, 401, 201, 201, 201, 201)),
    Row("me-api-key", "DELETE", lambda w: f"/api/v1/me/api-keys/{w.my_key_id}/", None,
        (401, 401, 204, 404, 404, 404)),
    Row("workspace-list", "GET", lambda w: "/api/v1/workspaces/", None, SIGNED_IN),
    Row("workspace-list", "POST", lambda w: "/api/v1/workspaces/", {"name": "New"},
        STAFF(201)),
    # Non-members do not learn that a workspace exists: 404, not 403.
    Row("workspace-detail", "GET", lambda w: W, None, (401, 401, 404, 200, 200, 200)),
    Row("workspace-detail", "PATCH", lambda w: W, {"bindings": {"chat": None}},
        (401, 401, 404, 403, 200, 200)),
    Row("workspace-detail", "PUT", lambda w: W, {"name": "Alpha", "bindings": {"chat": None}},
        (401, 401, 404, 403, 403, 200)),
    Row("workspace-detail", "DELETE", lambda w: W, None, (401, 401, 404, 403, 403, 204)),
    Row("workspace-resolved", "GET", lambda w: f"{W}resolved/", None,
        (401, 401, 404, 200, 200, 200)),
    Row("workspace-api-keys", "GET", lambda w: f"{W}api-keys/", None,
        (401, 401, 404, 403, 200, 200)),
    Row("workspace-api-keys", "POST", lambda w: f"{W}api-keys/", {"name": "k2"},
        (401, 401, 404, 403, 201, 201)),
    Row("workspace-api-key-revoke", "DELETE", lambda w: f"{W}api-keys/{w.key_id}/", None,
        (401, 401, 404, 403, 204, 204)),
    Row("workspace-members", "GET", lambda w: f"{W}members/", None,
        (401, 401, 404, 403, 200, 200)),
    Row("workspace-members", "POST", lambda w: f"{W}members/",
        {"user": "plain", "role": "member"}, (401, 401, 404, 403, 403, 201)),
    Row("workspace-member-detail", "PATCH", lambda w: f"{W}members/{w.member_id}/",
        {"role": "manager"}, (401, 401, 404, 403, 403, 200)),
    Row("workspace-member-detail", "DELETE", lambda w: f"{W}members/{w.member_id}/", None,
        (401, 401, 404, 403, 403, 204)),
    Row("system-default-list", "GET", lambda w: "/api/v1/system-defaults/", None, SIGNED_IN),
    Row("system-default-detail", "GET", lambda w: "/api/v1/system-defaults/chat/", None,
        SIGNED_IN),
    Row("system-default-detail", "PUT", lambda w: "/api/v1/system-defaults/chat/",
        lambda w: {"connection": str(w.conn.pk)}, STAFF(200)),
    Row("system-default-detail", "PATCH", lambda w: "/api/v1/system-defaults/chat/",
        lambda w: {"connection": str(w.conn.pk)}, STAFF(200)),
    Row("system-default-detail", "DELETE", lambda w: "/api/v1/system-defaults/chat/", None,
        STAFF(204)),
    Row("usage", "GET", lambda w: "/api/v1/usage/", None, MANAGER_READS),
    # Budgets: anyone signed in lists those of the workspaces they manage (none: empty).
    Row("budget-list", "GET", lambda w: "/api/v1/budgets/", None, SIGNED_IN),
    Row("budget-list", "POST", lambda w: "/api/v1/budgets/",
        {"scope": "workspace", "workspace": "alpha", "period": "day", "limit": "5"},
        STAFF(201)),
    Row("budget-detail", "GET", lambda w: f"/api/v1/budgets/{w.budget_id}/", None,
        (401, 401, 404, 404, 200, 200)),
    Row("budget-detail", "PATCH", lambda w: f"/api/v1/budgets/{w.budget_id}/",
        {"limit": "20"}, (401, 401, 404, 404, 403, 200)),
    Row("budget-detail", "DELETE", lambda w: f"/api/v1/budgets/{w.budget_id}/", None,
        (401, 401, 404, 404, 403, 204)),
    Row("audit-event-list", "GET", lambda w: "/api/v1/audit-events/", None, STAFF(200)),
    Row("audit-event-detail", "GET", lambda w: f"/api/v1/audit-events/{w.audit_id}/", None,
        STAFF(200)),
    Row("gateway-chat", "POST", lambda w: "/v1/chat/completions", CHAT, GATEWAY),
    Row("gateway-embeddings", "POST", lambda w: "/v1/embeddings",
        {"model": "embedding", "input": "x"}, GATEWAY),
    Row("gateway-models", "GET", lambda w: "/v1/models", None, GATEWAY),
    Row("gateway-model", "GET", lambda w: "/v1/models/chat", None, GATEWAY),
    Row("gateway-not-found", "GET", lambda w: "/v1/files", None, (404,) * 6),
    Row("root", "GET", lambda w: "/", None, (302,) * 6),
    Row("api-not-found", "GET", lambda w: "/api/v1/no-such-endpoint/", None, (404,) * 6),
]

# Admin: every page needs a staff session; the rest are sent to the login page.
ADMIN_MODEL_KINDS = ("_changelist", "_add", "_change", "_history", "_delete")
ADMIN_SITE_PAGES = {"index", "login", "logout", "password_change", "password_change_done",
                    "autocomplete", "jsi18n", "view_on_site", "app_list",
                    "admin/(?P<url>.*)$", "admin/<path:object_id>/"}
ADMIN_CUSTOM = {  # the admin's own actions beyond Django's model pages (GET shows, POST acts)
    "connections_connection_move_bindings",
    "connections_connection_rotate_secret",
    "connections_connection_rollback_secret",
    "workspaces_workspace_member_set",
    "workspaces_workspace_member_remove",
    "workspaces_workspace_api_key_create",
    "workspaces_workspace_api_key_revoke",
}


def _patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for p in resolver.url_patterns:
        if isinstance(p, URLResolver):
            yield from _patterns(p, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name


def _classify(route: str, name: str | None) -> str | None:
    if route.startswith("admin/"):
        if name and (name.endswith(ADMIN_MODEL_KINDS) or name in ADMIN_SITE_PAGES
                     or name.endswith("password_change") or name in ADMIN_CUSTOM):
            return "admin"
        if name is None and (route.endswith("<path:object_id>/") or route == "admin/(?P<url>.*)$"):
            return "admin"
        return None
    names = {row.name for row in API}
    return "api" if (name in names or route in names) else None


def _gateway_request(world: World, role: str, method: str, path: str, body):
    headers = {} if role == "anonymous" else {"Authorization": f"Token {world.tokens[role]}"}

    async def run():
        client = AsgiClient()
        response = await (client.get(path, headers=headers) if method == "GET" else
                          client.post(path, data=json.dumps(body), headers=headers))
        await response.aread()
        return response

    return async_to_sync(run)()


def test_every_gateway_route_has_a_row():
    """The /v1 route table (llmconn/asgi.py) is not in the URL conf: checked here instead."""
    from llmconn.asgi import GATEWAY_PREFIX, GATEWAY_ROUTES

    paths = {row.path(None) for row in API if row.name.startswith("gateway-")}
    missing = [route for route in GATEWAY_ROUTES if GATEWAY_PREFIX + route not in paths]
    assert not missing, f"/v1 routes with no row in API ({__file__}): {missing}"


def test_every_url_pattern_is_classified():
    unclassified = [(route, name) for route, name in _patterns() if _classify(route, name) is None]
    assert not unclassified, (
        "URL patterns with no expected outcome per role: add rows to API (or the admin lists) "
        f"in {__file__}: {unclassified}")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", API, ids=lambda r: f"{r.method}-{r.name}")
def test_api_endpoint_answers_each_role_as_the_table_says(world, row, role):
    body = row.body(world) if callable(row.body) else row.body
    path = row.path(world)
    if path.startswith("/v1/"):  # the gateway: only llmconn.asgi routes it
        response = _gateway_request(world, role, row.method, path, body)
    else:
        client = api_client(world, role)
        kwargs = {"format": "json"} if body is not None else {}
        response = getattr(client, row.method.lower())(path, body, **kwargs) \
            if body is not None else getattr(client, row.method.lower())(path)
    expected = row.expect[ROLES.index(role)]
    assert response.status_code == expected, (role, row.method, path,
                                              response.content[:300])
    if expected in (401, 403, 404) and path.startswith("/api/v1/"):
        assert set(response.json()["error"]) >= {"code", "message", "fields"}
    if expected == 401 and path.startswith("/v1/"):
        assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


# --- admin ------------------------------------------------------------------------------------

def admin_pages(world: World) -> list[tuple[str, str, str]]:
    """(kind, url, permission) of every admin page of every registered model, and the site's."""
    pages = [("index", reverse("admin:index"), ""),
             ("password_change", reverse("admin:password_change"), ""),
             ("password_change_done", reverse("admin:password_change_done"), ""),
             ("autocomplete", reverse("admin:autocomplete"), ""),
             ("catch_all", "/admin/no/such/page/", "")]
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        pages.append(("app_list", reverse("admin:app_list", args=(info[0],)), ""))
        pages.append(("changelist", reverse("admin:%s_%s_changelist" % info), "view"))
        pages.append(("add", reverse("admin:%s_%s_add" % info), "add"))
        obj = model._default_manager.order_by("pk").first()
        if model is Connection:  # another user's personal connection has its own row below
            obj = model._default_manager.filter(owner__isnull=True).order_by("pk").first()
        if obj is None:
            continue
        pk = obj.pk
        pages.append(("change", reverse("admin:%s_%s_change" % info, args=(pk,)), "view"))
        pages.append(("history", reverse("admin:%s_%s_history" % info, args=(pk,)), "view"))
        pages.append(("delete", reverse("admin:%s_%s_delete" % info, args=(pk,)), "delete"))
        pages.append(("object", f"/admin/{info[0]}/{info[1]}/{pk}/", "view"))
    ws, conn = world.workspace.pk, world.conn.pk
    personal = Connection.objects.filter(owner__isnull=False).exclude(
        owner=world.users["staff"]).order_by("pk").first()
    if personal is not None:
        # Staff see it as metadata (200) and may not delete it, test it, rotate it...
        pages += [
            ("change", reverse("admin:connections_connection_change", args=(personal.pk,)),
             "view"),
            ("personal_refused", reverse("admin:connections_connection_delete",
                                         args=(personal.pk,)), ""),
            ("personal_refused", reverse("admin:connections_connection_move_bindings",
                                         args=(personal.pk,)), ""),
            ("personal_refused", reverse("admin:connections_connection_rotate_secret",
                                         args=(personal.pk,)), ""),
        ]
    pages += [
        ("custom", reverse("admin:connections_connection_move_bindings", args=(conn,)), ""),
        ("custom", reverse("admin:connections_connection_rotate_secret", args=(conn,)), ""),
        ("custom", reverse("admin:connections_connection_rollback_secret", args=(conn,)), ""),
        ("custom", reverse("admin:workspaces_workspace_member_set", args=(ws,)), ""),
        ("custom", reverse("admin:workspaces_workspace_member_remove",
                           args=(ws, world.member_id)), ""),
        ("custom", reverse("admin:workspaces_workspace_api_key_create", args=(ws,)), ""),
        ("custom", reverse("admin:workspaces_workspace_api_key_revoke",
                           args=(ws, world.key_id)), ""),
    ]
    return pages


def admin_client(world: World, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world.users[role])  # an inactive user's session is not honoured
    return client


@pytest.mark.parametrize("role", [r for r in ROLES if r != "staff"])
def test_admin_pages_send_everyone_but_staff_to_the_login_page(world, role):
    client = admin_client(world, role)
    for kind, url, _ in admin_pages(world):
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code == 302, (role, method, url, response.status_code)
            assert response["Location"].startswith("/admin/login/"), (role, method, url)
    assert client.get("/admin/login/").status_code == 200


def test_staff_can_open_every_admin_page_and_writes_follow_model_permissions(world):
    client = admin_client(world, "staff")
    request = RequestFactory().get("/admin/")
    request.user = world.users["staff"]
    for kind, url, permission in admin_pages(world):
        response = client.get(url)
        if kind == "catch_all":
            assert response.status_code == 404
            continue
        if kind == "autocomplete":  # without its query parameters Django refuses it
            assert response.status_code == 403
            continue
        if kind == "object":
            assert response.status_code == 302 and "/change/" in response["Location"]
            continue
        if kind == "personal_refused":
            assert response.status_code == 403, (url, response.status_code)
            continue
        if kind == "custom":  # POST-only actions: a GET is refused or sent back, not a login
            assert response.status_code in (200, 302, 403, 405), (url, response.status_code)
            if response.status_code == 302:
                assert not response["Location"].startswith("/admin/login/")
            continue
        allowed = True
        if permission in ("add", "delete"):
            model_admin = next(a for m, a in admin.site._registry.items()
                               if f"/{m._meta.app_label}/{m._meta.model_name}/" in url)
            allowed = getattr(model_admin, f"has_{permission}_permission")(request)
        if allowed and response.status_code == 302:  # e.g. history shown by the audit log
            assert response["Location"].startswith("/admin/"), url
            assert not response["Location"].startswith("/admin/login/"), url
            continue
        expected = 200 if allowed else 403
        assert response.status_code == expected, (kind, url, response.status_code)


# --- keys and tokens beyond the roles ---------------------------------------------------------


@pytest.fixture
def two_workspaces(upstream_factory, make_connection, make_workspace, make_key):
    up_a, up_b = upstream_factory(name="a"), upstream_factory(name="b")
    up_a.models, up_b.models = ["model-a"], ["model-b"]
    for up in (up_a, up_b):
        up.api_keys = {"sk-upstream-test-key-0001"}
    conn_a, conn_b = make_connection(up_a, name="conn-a"), make_connection(up_b, name="conn-b")
    for conn, model in ((conn_a, "model-a"), (conn_b, "model-b")):
        from connections.models import DiscoveredModel
        from django.utils import timezone

        DiscoveredModel.objects.create(connection=conn, model_id=model,
                                       discovered_at=timezone.now())
    ws_a = make_workspace("ws-a", chat=(conn_a, "model-a"))
    ws_b = make_workspace("ws-b", chat=(conn_b, "model-b"))
    return up_a, up_b, ws_a, ws_b, make_key(ws_a), make_key(ws_b)


def test_a_workspace_key_cannot_reach_another_workspaces_models(two_workspaces, gateway):
    up_a, up_b, ws_a, ws_b, key_a, key_b = two_workspaces
    r = gateway.post("/v1/chat/completions", key_a, {**CHAT, "model": "model-b"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = gateway.post("/v1/chat/completions", key_a, CHAT)
    assert r.status_code == 200 and r["x-llmconn-connection"] == "conn-a"
    listed = {m["id"] for m in gateway.get("/v1/models", key_a).json()["data"]}
    assert "model-b" not in listed and "model-a" in listed
    assert gateway.get("/v1/models/model-b", key_a).status_code == 404
    assert up_b.request_count == 0  # nothing reached workspace B's provider


def test_a_workspace_key_is_not_an_api_credential(two_workspaces):
    *_, key_a, _ = two_workspaces
    client = APIClient()
    for header in (f"Bearer {key_a}", f"Token {key_a}"):
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/v1/workspaces/ws-a/").status_code == 401


def test_a_revoked_key_is_refused_on_every_gateway_endpoint(two_workspaces, gateway):
    up_a, _, ws_a, _, key_a, _ = two_workspaces
    assert gateway.post("/v1/chat/completions", key_a, CHAT).status_code == 200
    services.api_key_revoke(api_key=WorkspaceAPIKey.objects.get(workspace=ws_a))
    calls = up_a.request_count
    for method, path, body in (("post", "/v1/chat/completions", CHAT),
                               ("post", "/v1/embeddings", {"model": "chat", "input": "x"}),
                               ("get", "/v1/models", None), ("get", "/v1/models/chat", None)):
        r = gateway.post(path, key_a, body) if method == "post" else gateway.get(path, key_a)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
    assert up_a.request_count == calls


def test_a_deleted_users_token_no_longer_authenticates(world):
    client = api_client(world, "staff")
    assert client.get("/api/v1/connections/").status_code == 200
    token = world.tokens["staff"]
    world.users["staff"].delete()
    assert not Token.objects.filter(key=token).exists()
    r = client.get("/api/v1/connections/")
    assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_failed"


def test_a_user_made_inactive_loses_api_and_admin_access_at_once(world):
    api = api_client(world, "manager")
    assert api.get(W).status_code == 200
    browser = admin_client(world, "staff")
    assert browser.get("/admin/").status_code == 200
    for role in ("manager", "staff"):
        world.users[role].is_active = False
        world.users[role].save()
    assert api.get(W).status_code == 401
    assert browser.get("/admin/").status_code == 302


def test_unknown_ids_are_404_for_staff_not_500(world):
    client = api_client(world, "staff")
    for path in (f"{C}{uuid.uuid4()}/", f"/api/v1/connection-tests/{uuid.uuid4()}/",
                 "/api/v1/workspaces/nope/", "/api/v1/budgets/999999/",
                 "/api/v1/audit-events/999999/", "/api/v1/system-defaults/nope/",
                 f"{W}api-keys/999999/", f"{W}members/999999/"):
        method = "delete" if "api-keys" in path or "members" in path else "get"
        assert getattr(client, method)(path).status_code == 404, path


def test_bindings_stay_untouched_after_every_refused_write(world):
    before = list(WorkspaceBinding.objects.values_list("workspace_id", "role", "connection_id"))
    for role in ("anonymous", "inactive", "plain", "member"):
        client = api_client(world, role)
        client.patch(W, {"bindings": {"chat": None}}, format="json")
        client.post(f"{_c(world)}move-bindings/", {"to": str(world.spare.pk)}, format="json")
        client.delete(W)
    assert list(WorkspaceBinding.objects.values_list(
        "workspace_id", "role", "connection_id")) == before
