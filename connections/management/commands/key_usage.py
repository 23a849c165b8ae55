"""manage.py key_usage: how many encrypted values each key id holds, per column."""

from django.core.management.base import BaseCommand

from connections.crypto import keyring
from connections.key_rotation import key_usage


class Command(BaseCommand):
    help = "Show how many encrypted values are on each Fernet key (retire a key at zero rows)."

    def handle(self, *args, **options):
        ring = keyring()
        self.stdout.write("Configured keys (FERNET_KEYS order): " + ", ".join(
            f"{kid}{' (primary)' if i == 0 else ''}" for i, kid in enumerate(ring.ids)))
        rows = key_usage()
        if not rows:
            self.stdout.write("No encrypted values are stored.")
            return
        width = max(len(r["column"]) for r in rows)
        self.stdout.write(f"{'column'.ljust(width)}  {'key id'.ljust(15)}  {'rows':>8}  status")
        for r in rows:
            self.stdout.write(f"{r['column'].ljust(width)}  {r['key_id'].ljust(15)}  "
                              f"{r['rows']:>8}  {r['status']}")
        totals: dict[str, int] = {}
        for r in rows:
            totals[r["key_id"]] = totals.get(r["key_id"], 0) + r["rows"]
        for kid in ring.ids[1:]:
            if not totals.get(kid):
                self.stdout.write(f"Key {kid} holds no rows: it can be removed from FERNET_KEYS.")
