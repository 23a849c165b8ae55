"""Keeping secrets out of logs and stored messages.

Every secret this process decrypts is remembered (in a bounded set, in memory only) by the
encrypted field, and `redact()` replaces any remembered secret, and anything shaped like a
bearer token or provider key, with `[REDACTED]`. `install()` applies it to every log record
(message, arguments and traceback) as it is created, litellm's included, so a key echoed back
by a provider or printed by a library at DEBUG never reaches a log handler.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8
MAX_REMEMBERED = 20_000

_lock = threading.Lock()
_known: OrderedDict[str, None] = OrderedDict()

# Things that are secrets whatever they are: bearer tokens, provider-style keys, our own keys.
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[-_]?key|x-api-key|x-litellm-api-key|authorization|client_secret|"
               r"access_token|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
    re.compile(r"\b(sk-[A-Za-z0-9_-]{3})[A-Za-z0-9_-]{8,}"),
    re.compile(r"\b(lck_)[A-Za-z0-9_-]{8,}"),
]


def remember(value: object) -> None:
    """Remember a secret value (or every string in a dict of them) for redaction."""
    if isinstance(value, dict):
        for item in value.values():
            remember(item)
        return
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _known[value] = None
        _known.move_to_end(value)
        while len(_known) > MAX_REMEMBERED:
            _known.popitem(last=False)


def redact(text: str) -> str:
    """`text` with every remembered secret and secret-shaped token replaced."""
    if not text:
        return text
    with _lock:
        known = [s for s in _known if s in text]
    for secret in sorted(known, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _clean(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string must not hide the record
        message = str(record.msg)
    cleaned = redact(message)
    if cleaned != message:
        # Only when something was redacted: formatters that read record.args (uvicorn's
        # access log unpacks them) keep working for every clean record.
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_installed = False


def install() -> None:
    """Redact every log record when it is created, before any handler (caplog's, Celery's,
    Sentry's...) sees it: a record factory wraps the default one. Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        _clean(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
