"""manage.py export_connections [--output FILE]: the whole configuration as JSON, without
secrets (keyed fingerprints in their place): shared connections with their gateway settings
and default params, system defaults, workspaces with bindings and fallbacks, budgets.

(In workspaces, not connections: it exports workspaces too, and the layers point one way.)"""

import json

from django.core.management.base import BaseCommand

from workspaces.config_transfer import config_export


class Command(BaseCommand):
    help = ("Export the configuration (connections, system defaults, workspaces, bindings, "
            "fallbacks, budgets, prices, timeouts, default params) as JSON without secrets.")

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="Write to this file instead of stdout.")

    def handle(self, *args, output=None, **options):
        data = config_export()
        text = json.dumps(data, indent=2, sort_keys=True)
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            self.stderr.write(f"Exported {len(data['connections'])} connection(s) and "
                              f"{len(data['workspaces'])} workspace(s) to {output}.")
        else:
            self.stdout.write(text)
