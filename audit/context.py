"""Who is acting, and how, for the audit log: one contextvar per request, command or task.

The middleware (`audit.middleware.AuditContextMiddleware`) opens a context for every HTTP
request with its IP and user agent; the actor and the way they authenticated are read from the
request when an event is written (DRF authenticates inside the view, after middleware ran).
Code that authenticates by other means sets `request.audit_auth_kind`;
management commands wrap their work in `audit_context(auth_kind="command")`.
https://docs.python.org/3/library/contextvars.html
"""

from __future__ import annotations

import contextlib
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

SESSION = "session"
TOKEN = "token"
WORKSPACE_KEY = "workspace_key"
COMMAND = "command"
SYSTEM = "system"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class AuditContext:
    """Where an action comes from: the request (if any), or an explicit actor and auth kind."""

    request: Any = None
    actor: Any = None
    auth_kind: str = ""
    ip: str | None = None
    user_agent: str = ""


_current: ContextVar[AuditContext | None] = ContextVar("llmconn_audit_context", default=None)


def current() -> AuditContext | None:
    """The context of the running request/command, or None (e.g. a Celery task)."""
    return _current.get()


@contextlib.contextmanager
def audit_context(**values):
    """Run a block with an audit context (e.g. `audit_context(auth_kind="command")`)."""
    base = _current.get() or AuditContext()
    token = _current.set(replace(base, **values))
    try:
        yield
    finally:
        _current.reset(token)


def client_ip(request) -> str | None:
    """The client's address as the server saw it (REMOTE_ADDR; proxies must set it right)."""
    return request.META.get("REMOTE_ADDR") or None


def resolve(ctx: AuditContext | None, actor=None) -> dict:
    """Actor, auth kind, IP and user agent for an event, from an explicit actor and the context."""
    ctx = ctx or AuditContext()
    request = ctx.request
    user = actor if actor is not None else ctx.actor
    auth_kind = ctx.auth_kind
    if request is not None:
        req_user = getattr(request, "user", None)
        if user is None and req_user is not None and getattr(req_user, "is_authenticated", False):
            user = req_user
        if not auth_kind:
            auth_kind = _auth_kind_of(request, user)
    if not auth_kind:
        auth_kind = COMMAND if _in_management_command() else SYSTEM
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    return {"actor": user, "auth_kind": auth_kind, "ip": ctx.ip, "user_agent": ctx.user_agent}


def _in_management_command() -> bool:
    """True in `manage.py <command>` processes (not the dev server, not Celery or uvicorn)."""
    argv = sys.argv
    return (len(argv) > 1 and os.path.basename(argv[0]) == "manage.py"
            and argv[1] not in ("runserver", "shell"))


def _auth_kind_of(request, user) -> str:
    explicit = getattr(request, "audit_auth_kind", "")
    if explicit:
        return explicit
    auth = getattr(request, "auth", None)  # DRF copies request.auth onto the Django request
    if auth is not None:
        from rest_framework.authtoken.models import Token

        if isinstance(auth, Token):
            return TOKEN
        if "apikey" in type(auth).__name__.lower():
            return WORKSPACE_KEY
        return TOKEN
    if user is not None and getattr(user, "is_authenticated", False):
        return SESSION
    return ANONYMOUS
