"""manage.py import_user_settings FILE.json: per-user LLM settings ({username, llm_model,
llm_api_key, llm_base_url}, as OpenHands keeps them) as personal connections and user
defaults. Masked keys are skipped; running it twice changes nothing."""


from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from llmconn.commands import read_json_file
from workspaces.user_settings_import import import_user_settings


class Command(BaseCommand):
    help = ("Create personal connections and chat defaults from a JSON list of per-user "
            "settings {username, llm_model, llm_api_key, llm_base_url}; idempotent.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="JSON file: a list of user settings objects.")

    def handle(self, *args, file, **options):
        entries = read_json_file(file)
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
