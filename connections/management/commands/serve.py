"""Serve the site with uvicorn for `make run`, ending the start-up output with a framed block.

It ensures the `admin` user (as `ensure_admin` does), starts uvicorn on the production entry
point (`llmconn.asgi:application`), and once the socket listens prints the URL, the username
and the password (first run) or how to reset it, so the one thing a new user needs is the last
thing on the screen. Lifespan on: llmconn.asgi answers its startup with the web process's
settings (GIL switch interval, garbage collector), as under gunicorn's uvicorn workers.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand

from .ensure_admin import ensure_admin


def framed(lines: list[str]) -> str:
    """`lines` in a box of # characters (plain ASCII: every terminal and log shows it)."""
    width = max(len(line) for line in lines)
    rule = "#" * (width + 4)
    return "\n".join([rule, *(f"# {line.ljust(width)} #" for line in lines), rule])


class Command(BaseCommand):
    help = "Serve llmconn with uvicorn (make run) and print how to log in once it listens."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options):
        import uvicorn

        state = ensure_admin()
        url = f"http://{host}:{port}/admin/"
        block = framed([f"llmconn is running: {url}", *state.lines(), "Ctrl-C stops it"])

        class Server(uvicorn.Server):
            async def startup(self, sockets=None):
                await super().startup(sockets=sockets)
                if self.started:
                    print(block, flush=True)

        config = uvicorn.Config("llmconn.asgi:application", host=host, port=port,
                                lifespan="on")
        server = Server(config)
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its clean shutdown
            return
        if not server.started:  # e.g. the port is taken: uvicorn logged why
            sys.exit(1)
