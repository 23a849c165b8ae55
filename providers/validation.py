"""Validation of a connection's settings against the catalog: the one set of rules that the
model's clean(), the API and the admin forms all use."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from .base import URL, find_provider
from .headers import (
    CA_CERT, EXTRA_HEADERS, ca_cert_problems, extra_headers_problems, header_value_problem,
)

MAX_VALUE_LENGTH = 8192  # a service-account JSON is ~2.5 kB; nothing legitimate is near this


def has_space_or_control(value: str) -> bool:
    """True when a value contains whitespace or a control/format character anywhere (urlsplit
    silently strips CR, LF and tab, so they must be refused before it sees the URL)."""
    return any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Zs")
               for c in value)


def validate_url(url: str, *, label: str = "Base URL", allow_query: bool = False) -> list[str]:
    """Problems with a URL a secret may be sent to, as sentences; [] when it is fine."""
    if len(url) > 2048:
        return [f"{label} is too long (2048 characters at most)."]
    if has_space_or_control(url):
        return [f"{label} must not contain spaces or control characters (CR, LF, tab...)."]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return [f"{label} is not a valid URL."]
    if parts.scheme not in ("http", "https"):
        return [f"{label} must start with http:// or https://."]
    if not parts.hostname:
        return [f"{label} must name a host, e.g. https://api.example.com/v1."]
    if parts.username or parts.password:
        return [f"{label} must not contain a user name or password: put secrets in credentials."]
    if parts.fragment or (parts.query and not allow_query):
        return [f"{label} must not contain a query string or fragment."
                if not allow_query else f"{label} must not contain a fragment."]
    return []


def validate_base_url(url: str) -> list[str]:
    """Problems with a base URL, as sentences; [] when it is fine."""
    return validate_url(url, label="Base URL")


def validate_connection_settings(
    *,
    provider: str,
    auth_method: str,
    base_url: str | None,
    config: dict,
    secrets: dict | None,
) -> None:
    """Raise ValidationError({field: [messages]}) unless the settings fit the catalog.

    `secrets` is the complete set the connection will hold (stored ones merged with new ones);
    None means "unknown" (stored secrets could not be decrypted) and skips the secret checks.
    """
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    spec = find_provider(provider)
    if spec is None:
        raise ValidationError({"provider": [f"Unknown provider {provider!r}: see /api/v1/providers/."]})
    method = spec.auth_method(auth_method)
    if method is None:
        names = ", ".join(m.name for m in spec.auth_methods)
        raise ValidationError(
            {"auth_method": [f"{spec.label} does not support auth method {auth_method!r}; use one of: {names}."]}
        )

    if base_url:
        for problem in validate_base_url(base_url):
            add("base_url", problem)
    elif spec.base_url_required:
        add("base_url", f"{spec.label} has no default endpoint: set base_url.")

    fields = {f.name: f for f in spec.all_fields(auth_method)}
    if not isinstance(config, dict):
        add("config", "config must be an object of the provider's non-secret fields.")
        config = {}
    for key, value in config.items():
        known = fields.get(key)
        if key == EXTRA_HEADERS:  # every provider's: providers.headers says what fits
            for problem in extra_headers_problems(spec, auth_method, config):
                add("config", problem)
            continue
        if key == CA_CERT:
            for problem in ca_cert_problems(config):
                add("config", problem)
            continue
        if known is None:
            allowed = ", ".join(sorted(f for f, d in fields.items() if not d.secret)) or "none"
            add("config", f"Unknown config field {key!r} for {spec.label} with {auth_method}; allowed: {allowed}.")
        elif known.secret:
            add("config", f"{key!r} is a secret: send it in credentials, not config.")
        elif not isinstance(value, str):
            add("config", f"{key!r} must be a string.")
        elif len(value) > MAX_VALUE_LENGTH:
            add("config", f"{key!r} is too long.")
        elif value == "":
            continue
        elif known.kind == URL:
            for problem in validate_url(value, label=f"{key!r}", allow_query=True):
                add("config", problem)
        elif known.defines_destination and has_space_or_control(value):
            add("config", f"{key!r} must not contain spaces or control characters.")
        elif not known.multiline and header_value_problem(value):
            add("config", f"{key!r} {header_value_problem(value)}.")
        elif known.pattern and not re.fullmatch(known.pattern, value):
            add("config", f"{key!r} must be {known.pattern_help or 'a plain name'}; "
                          f"got {value[:60]!r}.")
    for f in fields.values():
        if not f.secret and f.required and not config.get(f.name) and not f.default:
            add("config", f"{f.name!r} is required for {spec.label} ({f.label}).")

    if secrets is not None:
        for key, value in secrets.items():
            known = fields.get(key)
            if known is None:
                allowed = ", ".join(sorted(f for f, d in fields.items() if d.secret)) or "none"
                add("credentials", f"Unknown credential {key!r} for {spec.label} with {auth_method}; allowed: {allowed}.")
            elif not known.secret:
                add("credentials", f"{key!r} is not a secret: send it in config.")
            elif not isinstance(value, str):
                add("credentials", f"{key!r} must be a string.")
            elif len(value) > MAX_VALUE_LENGTH:
                add("credentials", f"{key!r} is too long.")
            elif not known.multiline and header_value_problem(value):
                add("credentials", f"{key!r} {header_value_problem(value)}.")
        for f in fields.values():
            if f.secret and f.required and not secrets.get(f.name):
                add("credentials", f"{f.name!r} is required for {spec.label} with {method.label}.")
        if not errors.get("credentials"):
            for problem in spec.secret_problems(auth_method, secrets):
                add("credentials", problem)

    if errors:
        raise ValidationError(errors)


def config_with_defaults(provider: str, auth_method: str, config: dict) -> dict:
    """The config with the catalog's defaults filled in for fields not given."""
    spec = find_provider(provider)
    if spec is None:
        return dict(config)
    merged = {f.name: f.default for f in spec.all_fields(auth_method) if not f.secret and f.default}
    merged.update({k: v for k, v in config.items() if v not in (None, "", {})})
    return merged


def connection_destination(*, provider: str, auth_method: str, base_url: str | None,
                           config: dict | None) -> dict | None:
    """The destination of a connection's secrets (Provider.destination), or None when the
    provider left the catalog (then only the raw values can be compared)."""
    spec = find_provider(provider)
    if spec is None:
        return {"provider": provider, "endpoint": base_url or "", "fields": dict(config or {})}
    return spec.destination(base_url=base_url, auth_method=auth_method, config=config)
