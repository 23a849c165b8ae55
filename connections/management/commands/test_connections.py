"""manage.py test_connections [NAME ...|--all]: test connections now and print a result table.

Runs in this process (no worker needed), concurrently with bounded concurrency, like the
periodic health sweep; results are recorded as connection tests and update each connection's
status. Exits 1 when any test failed, 2 for bad arguments.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from connections import diagnostics
from connections.models import Connection


class Command(BaseCommand):
    help = "Test connections (by name, or --all) and print a table of results."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Connection names.")
        parser.add_argument("--all", action="store_true", help="Every connection.")
        parser.add_argument("--active", action="store_true",
                            help="With --all: only active connections.")
        parser.add_argument("--concurrency", type=int, default=diagnostics.SWEEP_CONCURRENCY,
                            help="Tests running at once (default %(default)s).")
        parser.add_argument("--timeout", type=float, default=diagnostics.TEST_TIMEOUT_S,
                            help="Seconds each test may take (default %(default)s).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args, names, all, active, concurrency, timeout, no_progress, **options):
        if names and all:
            raise CommandError("Give connection names or --all, not both.", returncode=2)
        if not names and not all:
            raise CommandError("Name the connections to test, or pass --all.", returncode=2)
        if concurrency < 1 or timeout <= 0:
            raise CommandError("--concurrency must be at least 1 and --timeout positive.",
                               returncode=2)
        if all:
            connections = list(Connection.objects.filter(is_active=True) if active
                               else Connection.objects.all())
        else:
            found = {c.name: c for c in Connection.objects.filter(name__in=names)}
            missing = [n for n in names if n not in found]
            if missing:
                raise CommandError(f"No connection named: {', '.join(missing)}.", returncode=2)
            connections = [found[n] for n in dict.fromkeys(names)]
        if not connections:
            self.stdout.write("No connections to test.")
            return

        total = len(connections)
        done = 0
        show_progress = not no_progress

        def progress(connection, outcome):
            nonlocal done
            done += 1
            if show_progress:
                width = 30
                filled = int(width * done / total)
                bar = "#" * filled + "-" * (width - filled)
                mark = "ok" if outcome.ok else outcome.error_class
                self.stderr.write(f"\r[{bar}] {done}/{total} {connection.name[:30]}: {mark}"
                                  .ljust(90), ending="")
                self.stderr.flush()

        rows = diagnostics.connection_health_sweep(
            connections=connections, concurrency=concurrency, timeout=timeout, deadline=None,
            on_result=progress)
        if show_progress:
            self.stderr.write("")
        by_connection = {r.connection_id: r for r in rows}
        table = [("NAME", "PROVIDER", "RESULT", "ERROR", "LATENCY", "MESSAGE")]
        for c in connections:
            r = by_connection[c.pk]
            table.append((c.name, c.provider, "ok" if r.status == "succeeded" else "FAILED",
                          r.error_class or "-",
                          f"{r.latency_ms} ms" if r.latency_ms is not None else "-",
                          r.message))
        widths = [max(len(str(row[i])) for row in table) for i in range(5)]
        for row in table:
            cells = [str(v).ljust(w) for v, w in zip(row[:5], widths)]
            self.stdout.write("  ".join(cells + [str(row[5])]).rstrip())
        failed = sum(1 for r in rows if r.status != "succeeded")
        self.stdout.write(f"\n{total - failed} of {total} connections OK"
                          + (f", {failed} failed." if failed else "."))
        if failed:
            sys.exit(1)
