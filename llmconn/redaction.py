"""Keeping secrets out of logs and stored messages.

Every secret this process decrypts is remembered (in a bounded set, in memory only) by the
encrypted field, and `redact()` replaces any remembered secret, and anything shaped like a
bearer token or provider key, with `[REDACTED]`.

Matching is compiled: the remembered secrets are held in Aho-Corasick automatons
(pyahocorasick), built when the set changes, so a log record costs a pass over its text per
automaton (a handful) whatever the number of secrets, and reading takes no lock. New secrets
are built into a new automaton at the next log record, merged with the newest existing ones
of comparable size (see _Matcher), so the total build work stays O(n log n).

`RedactingFilter` is the logging filter that applies it to a record: message and arguments, the
stack, and the exception, which stays on the record (`exc_info`, so error trackers still get
the exception and its traceback) with its message, notes and chained exceptions scrubbed.
llmconn.logs installs it for every record when it is created (litellm's included), before any
handler sees it, and it is also the `redact` filter of the LOGGING handlers.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections import OrderedDict

import ahocorasick

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8
MAX_REMEMBERED = 20_000

# Things that are secrets whatever they are: bearer tokens, provider-style keys, our own keys.
# Each with the literals it cannot match without (lower case when the pattern ignores case):
# a substring test is far cheaper than a regex search, so a clean line costs a few µs.
_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), ("bearer",), True),
    (re.compile(r"(?i)((?:api[-_]?key|x-api-key|x-litellm-api-key|authorization|client_secret|"
                r"access_token|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
     ("key", "authorization", "secret", "token", "password"), True),
    (re.compile(r"\b(sk-[A-Za-z0-9_-]{3})[A-Za-z0-9_-]{8,}"), ("sk-",), False),
    (re.compile(r"\b(lck_)[A-Za-z0-9_-]{8,}"), ("lck_",), False),
]


def _automaton(secrets) -> ahocorasick.Automaton | None:
    automaton = ahocorasick.Automaton()
    for secret in secrets:
        automaton.add_word(secret, len(secret))
    if len(automaton) == 0:
        return None
    automaton.make_automaton()
    return automaton


class _Matcher:
    """The remembered secrets: an LRU set (what is remembered) and automatons built from it
    (what is matched).

    `add` only queues a new secret (cheap: a burst of decryptions costs no build); the next
    `spans` builds the queued ones into a new automaton, merged with the newest existing ones
    while those are not more than twice its size, so sizes fall geometrically: a secret is
    rebuilt O(log n) times in all and a line is matched against O(log n) automatons. Readers
    take no lock unless something is queued."""

    def __init__(self):
        self.lock = threading.Lock()
        self.known: OrderedDict[str, None] = OrderedDict()
        self.pending: list[str] = []
        self.levels: list[set[str]] = []
        self.automatons: tuple = ()

    def add(self, value: str) -> None:
        with self.lock:
            if value in self.known:
                self.known.move_to_end(value)
                return
            self.known[value] = None
            while len(self.known) > MAX_REMEMBERED:
                self.known.popitem(last=False)
            self.pending.append(value)

    def _build(self) -> None:
        with self.lock:
            if not self.pending:
                return
            words, self.pending = set(self.pending), []
            levels = list(self.levels)
            while levels and len(levels[-1]) <= 2 * len(words):
                words |= levels.pop()
            # Forgotten (evicted) secrets leave at a merge.
            words = {w for w in words if w in self.known}
            levels.append(words)
            automatons = list(self.automatons[:len(levels) - 1])
            automatons.append(_automaton(words))
            self.levels = levels
            self.automatons = tuple(automatons)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Merged (start, end) spans of every remembered secret found in `text`."""
        if self.pending:
            self._build()
        found = []
        for automaton in self.automatons:
            if automaton is None:
                continue
            for end, length in automaton.iter(text):
                found.append((end + 1 - length, end + 1))
        if len(found) < 2:
            return found
        found.sort()
        merged = [found[0]]
        for start, end in found[1:]:
            if start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged


_matcher = _Matcher()


def remember(value: object) -> None:
    """Remember a secret value (or every string in a dict of them) for redaction."""
    if isinstance(value, dict):
        for item in value.values():
            remember(item)
        return
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    _matcher.add(value)


def redact(text: str) -> str:
    """`text` with every remembered secret and secret-shaped token replaced."""
    if not text:
        return text
    spans = _matcher.spans(text)
    if spans:
        parts, last = [], 0
        for start, end in spans:
            parts += [text[last:start], REDACTED]
            last = end
        parts.append(text[last:])
        text = "".join(parts)
    lower = None
    for pattern, literals, ignore_case in _PATTERNS:
        if ignore_case:
            if lower is None:
                lower = text.lower()
            haystack = lower
        else:
            haystack = text
        if any(literal in haystack for literal in literals):
            replaced = pattern.sub(_keep_prefix, text)
            if replaced != text:
                text, lower = replaced, None
    return text


def _keep_prefix(match: re.Match) -> str:
    return match.group(1) + REDACTED


# --- exceptions ---------------------------------------------------------------------------

MAX_CHAIN = 10


def _scrubbed(value):
    return redact(value) if isinstance(value, str) else value


def _scrubbed_exception(exc: BaseException, depth: int = 0) -> BaseException:
    """A copy of `exc` whose args, string attributes, notes and chained exceptions are
    redacted, with the same type and traceback (the original is left alone: its raiser may
    still use it). Raises if the type cannot be copied this way."""
    clone = type(exc).__new__(type(exc), *exc.args)
    clone.args = tuple(_scrubbed(a) for a in exc.args)
    if hasattr(exc, "__dict__"):
        for name, value in vars(exc).items():
            setattr(clone, name, [_scrubbed(n) for n in value] if name == "__notes__"
                    else _scrubbed(value))
    clone.__traceback__ = exc.__traceback__
    clone.__suppress_context__ = exc.__suppress_context__
    if depth < MAX_CHAIN:
        if exc.__cause__ is not None:
            clone.__cause__ = _scrubbed_exception(exc.__cause__, depth + 1)
        if exc.__context__ is not None:
            clone.__context__ = (clone.__cause__ if exc.__context__ is exc.__cause__
                                 else _scrubbed_exception(exc.__context__, depth + 1))
    return clone


def _clean_exception(record: logging.LogRecord) -> None:
    exc_type, exc, tb = record.exc_info
    text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
    cleaned = redact(text)
    if cleaned == text:
        return  # nothing secret: the exception stays as it was
    # Formatters print exc_text when set (logging.Formatter.format), so every handler prints
    # the redacted traceback, chained exceptions included.
    record.exc_text = cleaned
    try:
        clone = _scrubbed_exception(exc)
    except Exception:  # noqa: BLE001 - an exception type that cannot be copied: text only
        record.exc_info = None
        return
    text = "".join(traceback.format_exception(exc_type, clone, tb))
    if redact(text) != text:
        record.exc_info = None  # e.g. a secret in a custom __str__: the text must do
        return
    record.exc_info = (exc_type, clone, tb)


class RedactingFilter(logging.Filter):
    """Scrub a log record in place (message, arguments, stack, exception); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_llmconn_redacted", False):
            return True
        record._llmconn_redacted = True
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
            _clean_exception(record)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install() -> None:
    """Redact every log record when it is created (see llmconn.logs.install). Idempotent."""
    from .logs import install as install_logging

    install_logging()
