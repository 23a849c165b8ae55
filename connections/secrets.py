"""Rules about secret values: hints shown instead of them, and masks never stored as them."""

from __future__ import annotations

import re

HINT_LENGTH = 4
# Secrets shorter than this get no hint: four characters of an 8-character secret is too much.
MIN_LENGTH_FOR_HINT = 12

# What UIs and APIs show in place of a secret (the contract's mask rule). Real keys contain
# none of these runs, and none of the non-ASCII mask characters at all.
MASK_CHARS = "*•∙●⋯…＊·"
_MASK_RUN = re.compile(r"(?:[*•∙●⋯…＊·]|\.\.\.){3,}|\.{3}|\*{2,}")
_NON_ASCII_MASK = re.compile(r"[•∙●⋯…＊·]")
# "[REDACTED]", "<hidden>", "{{masked}}", "***REDACTED***", "REDACTED" alone...
_PLACEHOLDER = re.compile(
    r"[\[<({]+\s*(?:redacted|masked|hidden|removed|omitted|filtered|secret|sensitive)\s*[\]>)}]+"
    r"|^\W*(?:redacted|masked|hidden|removed|omitted|filtered)\W*$",
    re.IGNORECASE)
_MASK_BEFORE_HINT = re.compile(r"(?:[*•∙●⋯…＊·]+|\.{2,})$")


def make_hint(value: str) -> str:
    """The last characters of a secret, or "" when it is too short to show any."""
    return value[-HINT_LENGTH:] if len(value) >= MIN_LENGTH_FOR_HINT else ""


def looks_masked(value: str, hint: str = "") -> bool:
    """True when a value sent as a secret is a mask of one, never the secret itself.

    The one detector that the API, the admin, rotation and imports use (they all call
    connections.services.check_credentials_input): a run of 3+ mask characters anywhere
    ("sk-...WXYZ", "sk-proj-****WXYZ", "∙∙∙∙WXYZ", "＊＊＊＊WXYZ"), any non-ASCII mask
    character, a "[REDACTED]"-style placeholder, or a value ending in the stored hint after
    a mask ("*WXYZ", "⋯WXYZ", "…WXYZ") or equal to it.
    """
    text = value.strip()
    if _MASK_RUN.search(text) or _NON_ASCII_MASK.search(text) or _PLACEHOLDER.search(text):
        return True
    if hint and text.endswith(hint):
        before = text[: -len(hint)]
        if before == "" or _MASK_BEFORE_HINT.search(before):
            return True
    return False
