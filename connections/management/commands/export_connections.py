"""manage.py export_connections [--output FILE]: connections and system defaults as JSON,
with keyed fingerprints in place of secrets."""

import json

from django.core.management.base import BaseCommand

from connections.transfer import connections_export


class Command(BaseCommand):
    help = "Export connections and system defaults as JSON without secrets (fingerprints only)."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="Write to this file instead of stdout.")

    def handle(self, *args, output=None, **options):
        data = connections_export()
        text = json.dumps(data, indent=2, sort_keys=True)
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            self.stderr.write(f"Exported {len(data['connections'])} connection(s) to {output}.")
        else:
            self.stdout.write(text)
