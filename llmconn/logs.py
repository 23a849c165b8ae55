"""Log records: every one is redacted (llmconn.redaction) and carries the request id of the unit
of work it belongs to (llmconn.tracing: a /v1 call, a connection test), and an optional JSON
format for log shippers (`LOG_FORMAT=json`).

`install()` wraps the log record factory, so that when a record is created, in the context
(and thread) of the code that logs and before any handler sees it (caplog's, Celery's, an error
tracker's), it is redacted and the request id of its context is noted. The LOGGING handlers
(settings.py) declare both filters: `RequestIdFilter` gives formatters `%(request_id)s`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from .redaction import RedactingFilter
from .tracing import current_request_id

NO_REQUEST = "-"


class RequestIdFilter(logging.Filter):
    """Set `record.request_id` for formatters: the id of the unit of work the record was created
    in (llmconn.tracing's context variable, read by `install`'s factory at creation), else the
    current one, else "-"; a record given one by its caller (`extra=`) keeps it.

    The factory keeps the id under a private name: a public `request_id` set at creation would
    make `logger.info(..., extra={"request_id": ...})` raise (logging refuses to overwrite)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            record.request_id = (getattr(record, "_llmconn_request_id", None)
                                 or current_request_id() or NO_REQUEST)
        return True


class _CaptureRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record._llmconn_request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, and
    the (redacted) traceback as `exc_info` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": record.__dict__.get("request_id")
            or getattr(record, "_llmconn_request_id", None) or NO_REQUEST,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


_FILTERS = (_CaptureRequestId(), RedactingFilter())
_installed = False


def install() -> None:
    """On every log record as it is created (a record factory wraps the current one): note
    the request id of its context and redact it. Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        for f in _FILTERS:
            f.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
