"""manage.py import_connections FILE: create the connections and system defaults of an export
that do not exist yet; list those whose secrets must be entered."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from connections.transfer import connections_import
from llmconn.errors import ApplicationError


class Command(BaseCommand):
    help = ("Import connections exported by export_connections (no secrets: connections that "
            "need them are created inactive and listed).")

    def add_arguments(self, parser):
        parser.add_argument("file", help="The export file ('-' for stdin).")

    def handle(self, *args, file, **options):
        try:
            if file == "-":
                data = json.load(sys.stdin)
            else:
                with open(file, encoding="utf-8") as fh:
                    data = json.load(fh)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}.") from None
        except (ValueError, RecursionError):
            raise CommandError(f"{file} is not valid JSON.") from None
        try:
            with audit_context(auth_kind="command"):
                report = connections_import(data=data)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        for line in report.lines:
            self.stdout.write(line)
        if report.needs_secrets:
            self.stdout.write("\nConnections whose secrets must be entered (PATCH "
                              "/api/v1/connections/{id}/ with credentials, then set is_active):")
            for name, fields in report.needs_secrets:
                self.stdout.write(f"  {name}: {', '.join(fields)}")
        if not report.changed:
            self.stdout.write("Nothing changed.")
        if report.errors:
            raise CommandError(f"{report.errors} entr(y/ies) could not be imported (see above).")
