"""Rules about secret values: hints shown instead of them, and masks never stored as them."""

from __future__ import annotations

import re

HINT_LENGTH = 4
# Secrets shorter than this get no hint: four characters of an 8-character secret is too much.
MIN_LENGTH_FOR_HINT = 12

# What UIs and APIs show in place of a secret: runs of asterisks, bullets, or an ellipsis
# followed by the last characters. Real keys contain none of these.
_MASK_PATTERN = re.compile(r"\*{2,}|[•●·]|…|^\.{3}")


def make_hint(value: str) -> str:
    """The last characters of a secret, or "" when it is too short to show any."""
    return value[-HINT_LENGTH:] if len(value) >= MIN_LENGTH_FOR_HINT else ""


def looks_masked(value: str, hint: str = "") -> bool:
    """True when a value sent as a secret is a mask of one (e.g. "sk-****WXYZ", "…WXYZ")."""
    if _MASK_PATTERN.search(value):
        return True
    return bool(hint) and value.strip() in (hint, f"…{hint}", f"...{hint}")
