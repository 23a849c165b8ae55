"""Make sure a superuser named `admin` exists (used by `make run` and docker compose).

The password comes from LLMCONN_ADMIN_PASSWORD; without it a random one is generated and
printed once. An existing admin is left as it is, so running again keeps its password:
`make admin-password` (Django's `changepassword admin`) sets a new one.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"
RESET_HINT = "make admin-password (or: manage.py changepassword admin)"


@dataclass(frozen=True)
class AdminState:
    """What ensure_admin did: `password` is set only when it generated one (shown once)."""

    created: bool
    password: str | None = None
    from_environment: bool = False

    def lines(self) -> list[str]:
        """The sentences a person needs to log in, for the framed block of `make run`."""
        if self.created and self.password:
            return [f"username: {USERNAME}", f"password: {self.password}",
                    "(shown only this once; to change it later: make admin-password)"]
        if self.created:
            return [f"username: {USERNAME}", "password: the value of LLMCONN_ADMIN_PASSWORD"]
        lines = [f"username: {USERNAME}",
                 "password: unchanged (the one shown on the first run)",
                 "forgot it? " + RESET_HINT]
        if self.from_environment:
            lines.append("LLMCONN_ADMIN_PASSWORD is only used when the user is created")
        return lines


def ensure_admin() -> AdminState:
    """Create the superuser `admin` unless it exists; never changes an existing password."""
    User = get_user_model()
    env_password = os.environ.get("LLMCONN_ADMIN_PASSWORD") or ""
    if User.objects.filter(username=USERNAME).exists():
        return AdminState(created=False, from_environment=bool(env_password))
    password = env_password or secrets.token_urlsafe(12)
    User.objects.create_superuser(USERNAME, "", password)
    if env_password:
        return AdminState(created=True, from_environment=True)
    return AdminState(created=True, password=password)


class Command(BaseCommand):
    help = ("Create the superuser 'admin' if it does not exist (password: LLMCONN_ADMIN_PASSWORD "
            "or generated and printed once).")

    def handle(self, *args, **options):
        state = ensure_admin()
        text = "\n".join(state.lines())
        self.stdout.write(self.style.WARNING(text) if state.password else text)
