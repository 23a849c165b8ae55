"""manage.py import_connections FILE [--dry-run]: bring this install in line with an export
(create what is missing, update what differs; secrets are never in the file, so connections
that need them are created inactive and listed). `--dry-run` prints the same lines and changes
nothing. Importing the same file twice changes nothing."""


from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from llmconn.commands import read_json_file
from llmconn.errors import ApplicationError
from workspaces.config_transfer import config_import


class Command(BaseCommand):
    help = ("Import a configuration exported by export_connections (no secrets: connections "
            "that need them are created inactive and listed); --dry-run shows the diff only.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="The export file ('-' for stdin).")
        parser.add_argument("--dry-run", action="store_true",
                            help="Report what would change and change nothing.")

    def handle(self, *args, file, dry_run=False, **options):
        data = read_json_file(file)
        try:
            with audit_context(auth_kind="command"):
                report = config_import(data=data, dry_run=dry_run)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        for line in report.lines:
            self.stdout.write(f"{'(dry run) ' if dry_run else ''}{line}")
        if report.needs_secrets:
            self.stdout.write("\nConnections whose secrets must be entered (PATCH "
                              "/api/v1/connections/{id}/ with credentials, then set is_active):")
            for name, fields in report.needs_secrets:
                self.stdout.write(f"  {name}: {', '.join(fields)}")
        if not report.changed:
            self.stdout.write("Nothing changed." if not dry_run else
                              "Dry run: nothing would change.")
        elif dry_run:
            self.stdout.write("Dry run: nothing was changed.")
        if report.errors:
            raise CommandError(f"{report.errors} entr(y/ies) could not be imported (see above).")
