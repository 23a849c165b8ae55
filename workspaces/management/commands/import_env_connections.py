"""manage.py import_env_connections [--update]: connections and system defaults from legacy
environment variables (OPENAI_API_KEY, ANTHROPIC_API_KEY, AZURE_OPENAI_*, OLLAMA_BASE_URL,
OPENROUTER_API_KEY, LLM_PROVIDER/LLM_MODEL). Running it twice changes nothing."""

import os

from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from workspaces.env_defaults import env_import


class Command(BaseCommand):
    help = ("Create connections and system defaults from legacy environment variables; "
            "idempotent (a second run changes nothing and says so).")

    def add_arguments(self, parser):
        parser.add_argument("--update", action="store_true",
                            help="Bring existing *-env connections and system defaults in line "
                                 "with the environment (default: leave them and report).")

    def handle(self, *args, update=False, **options):
        with audit_context(auth_kind="command"):
            lines, changed, ok = env_import(env=os.environ, update=update)
        for line in lines:
            self.stdout.write(line)
        if not ok:
            raise CommandError("Some variables could not be imported (see the errors above).")
        if not changed:
            self.stdout.write(self.style.SUCCESS("Nothing changed: the database already matches "
                                                 "the environment."))
        else:
            self.stdout.write(self.style.SUCCESS("Done."))
