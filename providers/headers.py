"""What a connection's `config.extra_headers` and `config.ca_cert` may hold (the contract's
rules), in one place for validation (providers.validation) and the transport.

`config.extra_headers` is `{name: value}` of non-secret headers sent on every provider call:
names are RFC 9110 tokens, values have no CR, LF or NUL, and the names below are refused (the
transport sets them, or they carry credentials: secret headers use the `custom_header` auth
method). The auth method's own header (`x-api-key`, `api-key`, `x-litellm-api-key`, a custom
header's name...) is refused too: `refused_names(...)` adds it.
`config.ca_cert` is PEM CA certificate(s) trusted for this connection in addition to the
system roots; TLS verification cannot be turned off.
"""

from __future__ import annotations

import re
import ssl

REFUSED_HEADER_NAMES = frozenset({"authorization", "host", "content-length",
                                  "transfer-encoding", "connection", "cookie"})
# Headers each wire format's key travels in (refused as extra headers on every connection:
# they are credentials whichever auth method is used now).
AUTH_HEADER_NAMES = frozenset({"x-api-key", "api-key", "x-goog-api-key", "x-litellm-api-key",
                               "proxy-authorization"})
MAX_HEADERS = 32
MAX_VALUE_LENGTH = 4096
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def refused_names(*, auth_header: str | None = None) -> frozenset[str]:
    """Header names `config.extra_headers` may not set (lower case)."""
    extra = {auth_header.lower()} if auth_header else set()
    return REFUSED_HEADER_NAMES | AUTH_HEADER_NAMES | extra


def extra_header_problems(headers, *, auth_header: str | None = None) -> list[str]:
    """Problems with a `config.extra_headers` value, as sentences; [] when it is fine."""
    if not isinstance(headers, dict):
        return ["extra_headers must be an object of header names to values."]
    if len(headers) > MAX_HEADERS:
        return [f"extra_headers may hold at most {MAX_HEADERS} headers."]
    refused = refused_names(auth_header=auth_header)
    problems = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            problems.append(f"extra_headers: {str(name)[:50]!r} is not a valid header name.")
        elif name.lower() in refused:
            problems.append(f"extra_headers: {name!r} cannot be set here (llmconn sets it, or "
                            "it carries credentials: use the custom_header auth method).")
        elif not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH \
                or any(c in value for c in "\r\n\0"):
            problems.append(f"extra_headers: the value of {name!r} must be a string without "
                            f"line breaks or NUL, at most {MAX_VALUE_LENGTH} characters.")
    return problems


def ca_cert_problems(pem) -> list[str]:
    """Problems with a `config.ca_cert` value; [] when it is usable PEM."""
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        return ["ca_cert must be PEM CA certificate(s) (-----BEGIN CERTIFICATE-----...)."]
    if len(pem) > 64 * 1024:
        return ["ca_cert is too long (64 KiB at most)."]
    try:
        ssl.create_default_context().load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        return ["ca_cert is not a valid PEM certificate."]
    return []
