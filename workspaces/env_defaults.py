"""The system defaults of the legacy environment-variable import (manage.py
import_env_connections): connections.env_import creates the connections and names the defaults
the environment asks for; this module sets them. Idempotent, like the connections part: a
default that already matches is reported as unchanged, another one is left as is without
`update`.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ValidationError

from connections.env_import import env_connections_import
from llmconn.errors import ApplicationError, error_text

from .models import SystemDefault
from .services import system_default_set


def env_import(*, env: Mapping[str, str], update: bool = False,
               actor=None) -> tuple[list[str], bool, bool]:
    """Create or (with update) bring in line the connections and system defaults the
    environment describes. Returns (report lines, changed anything, every step succeeded)."""
    result = env_connections_import(env=env, update=update, actor=actor)
    lines, changed, ok = result.lines, result.changed, result.ok
    for role, conn, model in result.defaults:
        current = SystemDefault.objects.filter(role=role).select_related("connection").first()
        label = f"system default {role} -> {conn.name}{' / ' + model if model else ''}"
        if current is not None and current.connection_id == conn.pk and (current.model or None) == model:
            lines.append(f"unchanged: {label}")
            continue
        if current is not None and not update:
            lines.append(f"left as is: system default {role} is {current.connection.name}"
                         f"{' / ' + current.model if current.model else ''}; run with --update "
                         f"to set {conn.name}{' / ' + model if model else ''}")
            continue
        try:
            system_default_set(role=role, connection=conn, model=model, actor=actor)
        except (ApplicationError, ValidationError) as exc:
            lines.append(f"error: {label} not set: {error_text(exc)}")
            ok = False
            continue
        lines.append(f"{'set' if current is None else 'updated'} {label}")
        changed = True
    return lines, changed, ok
