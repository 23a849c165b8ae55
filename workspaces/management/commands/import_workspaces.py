"""manage.py import_workspaces FILE --keys-out KEYS: create many workspaces at once, with their
bindings and API keys (workspace_bulk_create: all or nothing, hundreds per second)."""

import json
import os

from django.core.management.base import BaseCommand, CommandError

from audit.context import audit_context
from connections.models import Connection
from llmconn.commands import read_json_file
from llmconn.errors import ApplicationError
from workspaces.services import workspace_bulk_create


class Command(BaseCommand):
    help = ('Create workspaces from a JSON file {"workspaces": [{"name", "slug", "bindings": '
            '{role: {"connection": id or name, "model", "fallbacks"}}, "api_keys": [names]}]}. '
            "All or nothing. New API keys are written to --keys-out (mode 0600), never shown.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="The JSON file ('-' for stdin).")
        parser.add_argument("--keys-out", default="",
                            help="Where to write the new API keys (JSON {slug: [{name, key}]}); "
                                 "required when the file asks for keys. Must not exist.")

    def handle(self, *args, file, keys_out, **options):
        data = read_json_file(file)
        items = data.get("workspaces") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise CommandError('The file must be an object {"workspaces": [...]}.')
        wants_keys = any(isinstance(i, dict) and i.get("api_keys") for i in items)
        if wants_keys and not keys_out:
            raise CommandError("The file asks for API keys: give --keys-out FILE to receive "
                               "them (they are shown nowhere else).")
        if keys_out and os.path.exists(keys_out):
            raise CommandError(f"{keys_out} exists: choose a new file for the keys.")
        by_name = dict(Connection.objects.values_list("name", "pk"))
        for item in items:
            for binding in ((item or {}).get("bindings") or {}).values() \
                    if isinstance(item, dict) else ():
                if not isinstance(binding, dict):
                    continue
                for ref in [binding, *[f for f in binding.get("fallbacks") or []
                                       if isinstance(f, dict)]]:
                    if ref.get("connection") in by_name:
                        ref["connection"] = str(by_name[ref["connection"]])
        try:
            with audit_context(auth_kind="command"):
                created = workspace_bulk_create(items=items)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if keys_out:
            keys = {}
            for (workspace, raws), item in zip(created, items, strict=True):
                names = item.get("api_keys") or []
                keys[workspace.slug] = [{"name": n, "key": k}
                                        for n, k in zip(names, raws, strict=True)]
            fd = os.open(keys_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(keys, fh, indent=1)
        self.stdout.write(f"Created {len(created)} workspace(s)"
                          + (f"; their API keys are in {keys_out}." if keys_out else "."))
