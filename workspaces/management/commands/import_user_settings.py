"""manage.py import_user_settings FILE.json: per-user LLM settings ({username, llm_model,
llm_api_key, llm_base_url}, as OpenHands keeps them) as personal connections and user
defaults. Masked keys are skipped; running it twice changes nothing."""

import json

from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from workspaces.user_settings_import import import_user_settings


class Command(BaseCommand):
    help = ("Create personal connections and chat defaults from a JSON list of per-user "
            "settings {username, llm_model, llm_api_key, llm_base_url}; idempotent.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="JSON file: a list of user settings objects.")

    def handle(self, *args, file, **options):
        try:
            with open(file, encoding="utf-8") as fh:
                entries = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read {file}: {exc.__class__.__name__}.") from None
        if not isinstance(entries, list):
            raise CommandError(f"{file} must hold a JSON list of objects.")
        with audit_context(auth_kind="command"):
            lines, changed, ok = import_user_settings(entries=entries)
        for line in lines:
            self.stdout.write(line)
        if not ok:
            raise CommandError("Some entries could not be imported (see the errors above).")
        self.stdout.write(self.style.SUCCESS("Done." if changed else
                                             "Nothing changed: the database already matches."))
