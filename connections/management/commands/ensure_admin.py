"""Make sure a superuser named `admin` exists (used by `make run`).

The password comes from LLMCONN_ADMIN_PASSWORD; without it a random one is generated and
printed once. An existing admin is left as it is, so running again keeps its password.
"""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser 'admin' if it does not exist (password: LLMCONN_ADMIN_PASSWORD or generated)."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("Admin user 'admin' exists; password unchanged.")
            return
        password = os.environ.get("LLMCONN_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if os.environ.get("LLMCONN_ADMIN_PASSWORD"):
            self.stdout.write("Created admin user 'admin' with the password from LLMCONN_ADMIN_PASSWORD.")
        else:
            self.stdout.write(self.style.WARNING(
                f"Created admin user 'admin' with password: {password}\n"
                "It is shown only this once; change it in the admin or set LLMCONN_ADMIN_PASSWORD."))
