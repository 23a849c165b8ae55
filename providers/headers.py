"""Rules for what connections configure for the transport: HTTP header names and values
(`config.extra_headers`, the custom-header auth method) and `config.ca_cert`, checked at save
time so that a bad one is a 400 naming the field, never a failure at send time. The transport
imports the same rules before sending.

Header names are RFC 9110 tokens (https://www.rfc-editor.org/rfc/rfc9110#name-tokens);
values must not contain CR, LF or NUL (RFC 9110 section 5.5: they would split the header).
"""

from __future__ import annotations

import re
import ssl

from .base import Provider

EXTRA_HEADERS = "extra_headers"
CA_CERT = "ca_cert"
MAX_CA_CERT_LENGTH = 64 * 1024

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")
MAX_EXTRA_HEADERS = 50
MAX_HEADER_LENGTH = 8192

# Headers `config.extra_headers` may never set: credentials (those of the auth method are
# added per connection by `refused_extra_headers`), the target host and the framing.
ALWAYS_REFUSED = frozenset({
    "authorization", "host", "content-length", "transfer-encoding", "connection", "cookie",
    # Headers some wire format's key travels in: credentials whichever auth method is used now.
    "x-api-key", "api-key", "x-goog-api-key", "x-litellm-api-key", "proxy-authorization",
})


def is_header_name(name: object) -> bool:
    """True for a valid HTTP header name (an RFC 9110 token)."""
    return isinstance(name, str) and bool(_TOKEN.fullmatch(name))


def header_value_problem(value: object) -> str | None:
    """Why a value cannot be sent as a header value, or None when it can."""
    if not isinstance(value, str):
        return "must be a string"
    if _BAD_VALUE_CHARS.search(value):
        return "must not contain CR, LF or NUL characters"
    if len(value) > MAX_HEADER_LENGTH:
        return f"is longer than {MAX_HEADER_LENGTH} characters"
    return None


def refused_extra_headers(spec: type[Provider], auth_method: str,
                          config: dict | None) -> frozenset[str]:
    """Lower-cased header names that a connection's `config.extra_headers` may not set."""
    return ALWAYS_REFUSED | spec.credential_headers(auth_method, config)


def extra_headers_problems(spec: type[Provider], auth_method: str,
                           config: dict | None) -> list[str]:
    """Problems with `config.extra_headers` ({name: value} of non-secret headers), as
    sentences naming the header; [] when it is fine or absent."""
    headers = (config or {}).get(EXTRA_HEADERS)
    if headers is None:
        return []
    if not isinstance(headers, dict):
        return ["extra_headers must be an object of {header name: value}."]
    if len(headers) > MAX_EXTRA_HEADERS:
        return [f"extra_headers has more than {MAX_EXTRA_HEADERS} headers."]
    refused = refused_extra_headers(spec, auth_method, config)
    problems = []
    for name, value in headers.items():
        if not is_header_name(name):
            problems.append(f"extra_headers: {name!r} is not a valid header name (RFC 9110 "
                            "token: letters, digits and !#$%&'*+-.^_`|~).")
            continue
        if name.lower() in refused:
            problems.append(f"extra_headers: {name!r} cannot be set here (credentials, host and "
                            "framing headers are the connection's own; secret headers use the "
                            "custom_header auth method).")
            continue
        problem = header_value_problem(value)
        if problem:
            problems.append(f"extra_headers: the value of {name!r} {problem}.")
    return problems


def ca_cert_problems(config: dict | None) -> list[str]:
    """Problems with `config.ca_cert` (PEM CA certificate(s) trusted for this connection in
    addition to the system roots; TLS verification cannot be turned off); [] when usable."""
    pem = (config or {}).get(CA_CERT)
    if pem in (None, ""):
        return []
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        return ["ca_cert must be PEM CA certificate(s) (-----BEGIN CERTIFICATE-----...)."]
    if len(pem) > MAX_CA_CERT_LENGTH:
        return [f"ca_cert is too long ({MAX_CA_CERT_LENGTH // 1024} KiB at most)."]
    try:
        ssl.create_default_context().load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        return ["ca_cert is not a valid PEM certificate."]
    return []
