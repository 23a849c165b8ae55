"""Per-user LLM settings from another tool (OpenHands' user settings export) as personal
connections and user defaults: `manage.py import_user_settings FILE.json`.

The file is a JSON list of `{"username", "llm_model", "llm_api_key", "llm_base_url"}`.
`llm_model` is written as litellm writes it (`anthropic/claude-sonnet-4-5`, `gpt-4o`); the
mapping is connections.env_import.split_litellm_model. Each user gets one personal connection
named IMPORTED_NAME and their chat default on it. A key that is a stored mask (`**********`,
what such tools export instead of the key) is never stored: an existing connection keeps its
key, a new one is not created (the user enters the key through the API). Running the same
file twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from connections.env_import import split_litellm_model
from providers.base import find_provider
from connections.models import Connection
from connections.secrets import looks_masked
from connections.services import connection_create, connection_update
from llmconn.errors import ApplicationError, error_text

from .models import Role, UserDefault
from .services import user_default_set

IMPORTED_NAME = "imported-settings"
FIELDS = ("username", "llm_model", "llm_api_key", "llm_base_url")


def import_user_settings(*, entries: Iterable[Mapping], actor=None
                         ) -> tuple[list[str], bool, bool]:
    """(report lines, changed anything, every entry imported or skipped on purpose)."""
    User = get_user_model()
    lines: list[str] = []
    changed, ok = False, True
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("username"), str):
            lines.append(f"error: {where}: expected an object with a username")
            ok = False
            continue
        username = entry["username"]
        where = f"user {username}"
        user = User.objects.filter(username=username).first()
        if user is None:
            lines.append(f"error: {where}: no such user (create the user first)")
            ok = False
            continue
        model_string = str(entry.get("llm_model") or "").strip()
        key = entry.get("llm_api_key") or ""
        base_url = str(entry.get("llm_base_url") or "").strip() or None
        if not model_string:
            lines.append(f"skipped: {where}: no llm_model")
            continue
        provider, model = split_litellm_model(model_string, base_url=base_url)
        if not provider:
            lines.append(f"error: {where}: cannot tell the provider of {model_string!r}")
            ok = False
            continue
        masked = not isinstance(key, str) or (bool(key) and looks_masked(key))
        credentials = {"api_key": key} if key and not masked else {}
        spec = find_provider(provider)
        auth_method = "api_key" if credentials else (
            "none" if spec is not None and spec.auth_method("none") and not key else "api_key")
        conn = Connection.objects.filter(owner=user, name=IMPORTED_NAME).first()
        try:
            if conn is None:
                if masked or (auth_method == "api_key" and not credentials):
                    lines.append(f"skipped: {where}: the key is masked or missing; nothing "
                                 "stored (the user enters it with the connections API)")
                    continue
                conn = connection_create(name=IMPORTED_NAME, provider=provider,
                                         auth_method=auth_method, base_url=base_url,
                                         default_model=model, credentials=credentials,
                                         owner=user, actor=actor)
                lines.append(f"created: {where}: personal connection {IMPORTED_NAME} "
                             f"({provider}, {model})")
                changed = True
            else:
                wanted = {"provider": provider, "base_url": base_url, "default_model": model}
                diffs = [k for k, v in wanted.items() if getattr(conn, k) != v]
                secrets = conn.secrets if conn.credentials_readable else {}
                new_key = {k: v for k, v in credentials.items() if (secrets or {}).get(k) != v}
                if diffs or new_key:
                    if masked:
                        lines.append(f"note: {where}: masked key skipped; the stored key is kept")
                    conn = connection_update(connection=conn, credentials=new_key, actor=actor,
                                             **wanted)
                    lines.append(f"updated: {where}: {', '.join(diffs + list(new_key))}")
                    changed = True
                else:
                    lines.append(f"unchanged: {where}")
            default = UserDefault.objects.filter(user=user, role=Role.CHAT).first()
            if default is None or default.connection_id != conn.pk or default.model != model:
                user_default_set(user=user, role=Role.CHAT, connection=str(conn.pk),
                                 model=model, actor=actor)
                lines.append(f"set: {where}: chat default {IMPORTED_NAME} / {model}")
                changed = True
        except (ApplicationError, ValidationError) as exc:
            lines.append(f"error: {where}: {error_text(exc)}")
            ok = False
    return lines, changed, ok
