"""The request id that follows one /v1 call or one connection test through logs and rows.

One context variable, set where a unit of work starts (a /v1 request, a Celery task) and read
wherever a log line, a usage row or an answer header needs it. asyncio tasks and
`asgiref.sync_to_async` copy the context, so a value set in a view is seen in its sync work.
"""

import contextvars
import os
import re

HEADER = "x-request-id"

# A client-sent id is kept only when it is short and plain (it lands in logs and rows).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("llmconn_request_id",
                                                                      default=None)


def new_request_id() -> str:
    """A fresh id in the form OpenAI uses (`req_` + 32 hex characters)."""
    return "req_" + os.urandom(16).hex()  # as random as uuid4().hex, without the UUID object


def accept_request_id(value: str | None) -> str:
    """The client's own id when it is safe to keep, else a fresh one."""
    if value and _CLIENT_ID.match(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the unit of work running in this context, if one was started."""
    return _current.get()


def set_request_id(value: str) -> contextvars.Token:
    """Start a unit of work under `value`; returns the token for `reset_request_id`."""
    return _current.set(value)


def reset_request_id(token: contextvars.Token) -> None:
    _current.reset(token)
