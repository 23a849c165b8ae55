"""Validation of a connection's settings against the catalog: the one set of rules that the
model's clean(), the API and the admin forms all use."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from .base import find_provider

MAX_VALUE_LENGTH = 8192  # a service-account JSON is ~2.5 kB; nothing legitimate is near this


def validate_base_url(url: str) -> list[str]:
    """Problems with a base URL, as sentences; [] when it is fine."""
    if len(url) > 2048:
        return ["Base URL is too long (2048 characters at most)."]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return ["Base URL is not a valid URL."]
    if parts.scheme not in ("http", "https"):
        return ["Base URL must start with http:// or https://."]
    if not parts.hostname:
        return ["Base URL must name a host, e.g. https://api.example.com/v1."]
    if parts.username or parts.password:
        return ["Base URL must not contain a user name or password: put secrets in credentials."]
    if parts.query or parts.fragment:
        return ["Base URL must not contain a query string or fragment."]
    return []


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
        if key in OUTBOUND_CONFIG:  # every provider's: providers.headers says what fits
            for problem in _outbound_problems(key, value, spec, auth_method, config):
                add("config", problem)
            continue
        known = fields.get(key)
        if known is None:
            allowed = ", ".join(sorted(f for f, d in fields.items() if not d.secret)) or "none"
            add("config", f"Unknown config field {key!r} for {spec.label} with {auth_method}; allowed: {allowed}.")
        elif known.secret:
            add("config", f"{key!r} is a secret: send it in credentials, not config.")
        elif not isinstance(value, str):
            add("config", f"{key!r} must be a string.")
        elif len(value) > MAX_VALUE_LENGTH:
            add("config", f"{key!r} is too long.")
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
        for f in fields.values():
            if f.secret and f.required and not secrets.get(f.name):
                add("credentials", f"{f.name!r} is required for {spec.label} with {method.label}.")

    if errors:
        raise ValidationError(errors)


OUTBOUND_CONFIG = ("extra_headers", "ca_cert")


def _outbound_problems(key: str, value, spec, auth_method: str, config: dict) -> list[str]:
    from .headers import ca_cert_problems, extra_header_problems

    if key == "ca_cert":
        return ca_cert_problems(value) if value else []
    auth_header = getattr(spec, "api_key_header", None) if auth_method == "api_key" else None
    if auth_method == "custom_header":
        auth_header = config.get("header_name") or "Authorization"
    return extra_header_problems(value, auth_header=auth_header) if value else []


def config_with_defaults(provider: str, auth_method: str, config: dict) -> dict:
    """The config with the catalog's defaults filled in for fields not given."""
    spec = find_provider(provider)
    if spec is None:
        return dict(config)
    merged = {f.name: f.default for f in spec.all_fields(auth_method) if not f.secret and f.default}
    merged.update({k: v for k, v in config.items() if v not in (None, "")})
    return merged
