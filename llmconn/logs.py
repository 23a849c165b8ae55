"""Log records: every one is redacted (llmconn.redaction) and carries the request id of the unit
of work it belongs to (llmconn.tracing: a /v1 call, a connection test), and an optional JSON
format for log shippers (`LOG_FORMAT=json`).

`install()` wraps the log record factory, so both filters run when a record is created, in the
context (and thread) of the code that logs, before any handler sees it: caplog's, Celery's,
an error tracker's. The same filters are also declared on the LOGGING handlers (settings.py),
where they find the record already done.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from .redaction import RedactingFilter
from .tracing import current_request_id

NO_REQUEST = "-"


class RequestIdFilter(logging.Filter):
    """Set `record.request_id` from llmconn.tracing's context variable ("-" outside a unit of
    work); a record that already has one keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or NO_REQUEST
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
            "request_id": getattr(record, "request_id", NO_REQUEST),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


_FILTERS = (RequestIdFilter(), RedactingFilter())
_installed = False


def install() -> None:
    """Run the request-id and redaction filters on every log record as it is created (a
    record factory wraps the current one). Idempotent."""
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
