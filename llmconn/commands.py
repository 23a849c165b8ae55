"""Pieces shared by the project's manage.py commands."""

import json
import sys

from django.core.management.base import CommandError


def read_json_file(path: str):
    """The JSON document in the file `path` ('-': standard input), or a CommandError that says
    what is wrong with it (never a traceback)."""
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
    except (ValueError, RecursionError):
        raise CommandError(f"{path} is not valid JSON.") from None
