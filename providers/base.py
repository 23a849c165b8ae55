"""The provider catalog's building blocks: fields, auth methods, providers, presets, registry.

A provider type is a `Provider` subclass registered by name with `@register`. It declares what
the API, the admin forms and validation need to know: its label, litellm prefix, auth methods
and their fields (which are secret), provider-level fields (Azure's api_version, Vertex's
project), default base URL and capabilities. Presets are named starting points (Ollama on
localhost, OpenRouter...) registered with `register_preset`. Nothing else lists providers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

# Field kinds: what a non-secret value is, for validation and for the destination.
TEXT = "text"
URL = "url"  # a URL a secret may be sent to (token_url): validated like base_url

CHAT = "chat"
EMBEDDINGS = "embeddings"

# Wire formats: how a provider's HTTP API looks, for code that can speak it directly.
WIRE_OPENAI = "openai"
WIRE_ANTHROPIC = "anthropic"
WIRE_OTHER = "other"


@dataclass(frozen=True)
class Field:
    """One setting of a provider or auth method. Secret fields go to `credentials`, the rest to
    `config`."""

    name: str
    label: str
    required: bool = False
    secret: bool = False
    default: str | None = None
    help_text: str = ""
    kind: str = TEXT
    # True when the value decides where secrets travel (a region, project or resource name
    # that builds the endpoint host or path). URL fields always do.
    destination: bool = False
    # A full-match regular expression the value must satisfy (e.g. a plain region token, so
    # that "attacker.example/x#" cannot be spliced into a host name), and what it means.
    pattern: str | None = None
    pattern_help: str = ""
    # Secret values that travel in an HTTP header must be one line; a JSON key file need not.
    multiline: bool = False

    @property
    def defines_destination(self) -> bool:
        return self.destination or self.kind == URL

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "required": self.required,
            "secret": self.secret,
            "default": self.default,
            "help_text": self.help_text,
            "kind": self.kind,
            "destination": self.defines_destination,
        }


@dataclass(frozen=True)
class AuthMethod:
    """A way to authenticate to a provider, with the fields it needs."""

    name: str
    label: str
    fields: tuple[Field, ...] = ()

    @property
    def secret_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.secret)

    @property
    def config_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.secret)

    def as_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "fields": [f.as_dict() for f in self.fields]}


# The auth methods most providers share. Provider-specific ones are declared beside the provider.
API_KEY = AuthMethod(
    "api_key", "API key", (Field("api_key", "API key", required=True, secret=True),)
)
NO_AUTH = AuthMethod("none", "No authentication (local server)")
CUSTOM_HEADER = AuthMethod(
    "custom_header",
    "Custom header",
    (
        Field("header_name", "Header name", required=True, default="Authorization",
              pattern=r"[!#$%&'*+.^_`|~0-9A-Za-z-]+",
              pattern_help="an HTTP header name (RFC 9110 token: letters, digits, - and _)",
              help_text="Sent with every request, e.g. Authorization or X-Api-Key."),
        Field("header_value", "Header value", required=True, secret=True,
              help_text="The full value, e.g. 'Bearer abc...'."),
    ),
)
OAUTH_CLIENT_CREDENTIALS = AuthMethod(
    "oauth_client_credentials",
    "OAuth 2.0 client credentials",
    (
        Field("token_url", "Token URL", required=True, kind=URL,
              help_text="The OAuth token endpoint (RFC 6749 section 4.4)."),
        Field("client_id", "Client ID", required=True),
        Field("client_secret", "Client secret", required=True, secret=True),
        Field("scope", "Scope", help_text="Space-separated scopes, if the server needs them."),
        Field("audience", "Audience", help_text="Audience parameter, if the server needs it."),
    ),
)


class Provider:
    """A provider type. Subclass, set the class attributes, and decorate with `@register`.

    - `name`: stable identifier stored on connections (never rename one).
    - `litellm_prefix`: the prefix of litellm model strings (`openai/gpt-4o-mini`).
    - `auth_methods`: the ways to authenticate; the first is the default.
    - `fields`: provider-level settings independent of the auth method (not secret unless
      marked), e.g. Azure's `api_version`.
    - `default_base_url`: None when the provider has no fixed endpoint; `base_url_required`
      when a connection must name one (Azure's resource endpoint, a self-hosted server).
    - `wire`: the HTTP format the provider speaks, for direct forwarding of OpenAI-style calls.
    - `models`: a static list used when the provider offers no live model listing.
    - `api_path`: the path of the provider's API on a server, added to a base URL given with
      an empty path (Ollama's documented `http://localhost:11434` → `.../v1`).
    - `litellm_http_handler`: litellm calls this provider through its own httpx handler
      (`AsyncHTTPHandler`), so the call gets `client=` providers.transport's handler; the
      others go through the openai SDK, which uses `litellm.aclient_session` (also ours).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    litellm_prefix: ClassVar[str]
    auth_methods: ClassVar[tuple[AuthMethod, ...]] = (API_KEY,)
    fields: ClassVar[tuple[Field, ...]] = ()
    default_base_url: ClassVar[str | None] = None
    base_url_required: ClassVar[bool] = False
    capabilities: ClassVar[frozenset[str]] = frozenset({CHAT})
    wire: ClassVar[str] = WIRE_OTHER
    models: ClassVar[tuple[str, ...]] = ()
    docs_url: ClassVar[str] = ""
    api_path: ClassVar[str] = ""
    # Headers that carry an API key for this provider besides Authorization (x-api-key...):
    # `config.extra_headers` may not set them.
    key_headers: ClassVar[tuple[str, ...]] = ()
    litellm_http_handler: ClassVar[bool] = False

    @classmethod
    def auth_method(cls, name: str) -> AuthMethod | None:
        return next((m for m in cls.auth_methods if m.name == name), None)

    @classmethod
    def default_auth_method(cls) -> AuthMethod:
        return cls.auth_methods[0]

    @classmethod
    def all_fields(cls, auth_method: str) -> tuple[Field, ...]:
        method = cls.auth_method(auth_method)
        return cls.fields + (method.fields if method else ())

    @classmethod
    def secret_field_names(cls, auth_method: str) -> tuple[str, ...]:
        return tuple(f.name for f in cls.all_fields(auth_method) if f.secret)

    @classmethod
    def model_string(cls, model: str) -> str:
        """The litellm model string for one of this provider's models."""
        return f"{cls.litellm_prefix}/{model}"

    @classmethod
    def normalize_base_url(cls, base_url: str | None) -> str | None:
        """`base_url` with `api_path` added when its path is empty; otherwise unchanged."""
        if not base_url or not cls.api_path:
            return base_url
        try:
            parts = urlsplit(base_url)
        except ValueError:
            return base_url  # validation reports it
        if not parts.scheme or not parts.netloc or parts.path not in ("", "/"):
            return base_url
        return parts._replace(path=cls.api_path).geturl()

    @classmethod
    def effective_base_url(cls, base_url: str | None) -> str | None:
        return cls.normalize_base_url(base_url) or cls.default_base_url

    @classmethod
    def credential_headers(cls, auth_method: str, config: dict | None) -> frozenset[str]:
        """Lower-cased names of the headers the auth method puts a secret in."""
        config = config or {}
        if auth_method == "none":
            return frozenset()
        names = {"authorization"}
        if auth_method == "api_key":
            names.update(h.lower() for h in cls.key_headers)
            header = getattr(cls, "api_key_header", None)
            if header:
                names.add(header.lower())
        method = cls.auth_method(auth_method)
        if method is not None and any(f.name == "header_name" for f in method.fields):
            default = next(f.default for f in method.fields if f.name == "header_name")
            name = config.get("header_name") or default or ""
            if isinstance(name, str) and name:
                names.add(name.lower())
        return frozenset(names)

    @classmethod
    def destination_fields(cls, auth_method: str) -> tuple[Field, ...]:
        """The non-secret fields (provider-level and the auth method's) that decide where
        secrets are sent: URL fields and endpoint-building ones (region, project...)."""
        return tuple(f for f in cls.all_fields(auth_method)
                     if not f.secret and f.defines_destination)

    @classmethod
    def destination(cls, *, base_url: str | None, auth_method: str, config: dict | None) -> dict:
        """Where this connection's secrets travel, as a comparable JSON-ready dict.

        The one place that computes it (contract: "Destination binding"): the provider, the
        effective base URL's scheme, host and port (default ports explicit, so https->http is
        a change), every URL field (normalised the same way, path kept) and every
        endpoint-building field, each with its catalog default when not set. A secret is
        only ever sent to the destination it was entered for.
        """
        config = config or {}
        fields = {}
        for f in cls.destination_fields(auth_method):
            value = config.get(f.name)
            value = f.default if value in (None, "") else value
            value = value if isinstance(value, str) else ("" if value is None else repr(value))
            fields[f.name] = normalize_url(value, keep_path=True) if f.kind == URL \
                else value.strip()
        return {"provider": cls.name,
                "endpoint": normalize_url(cls.effective_base_url(base_url) or ""),
                "fields": fields}

    @classmethod
    def as_dict(cls) -> dict:
        return {
            "name": cls.name,
            "label": cls.label,
            "litellm_prefix": cls.litellm_prefix,
            "auth_methods": [m.as_dict() for m in cls.auth_methods],
            "fields": [f.as_dict() for f in cls.fields],
            "default_base_url": cls.default_base_url,
            "base_url_required": cls.base_url_required,
            "capabilities": sorted(cls.capabilities),
            "wire": cls.wire,
            "models": list(cls.models),
            "docs_url": cls.docs_url,
        }


@dataclass(frozen=True)
class Preset:
    """A named starting point for a connection: a provider with its usual settings filled in."""

    name: str
    label: str
    provider: str
    description: str = ""
    auth_method: str | None = None
    base_url: str | None = None
    default_model: str = ""
    config: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        provider = get_provider(self.provider)
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "provider": self.provider,
            "auth_method": self.auth_method or provider.default_auth_method().name,
            "base_url": self.base_url or provider.default_base_url,
            "default_model": self.default_model,
            "config": dict(self.config),
        }


_PROVIDERS: dict[str, type[Provider]] = {}
_PRESETS: dict[str, Preset] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Class decorator: add a provider type to the catalog under `cls.name`."""
    if cls.name in _PROVIDERS:
        raise ValueError(f"provider {cls.name!r} is registered twice")
    if not cls.auth_methods:
        raise ValueError(f"provider {cls.name!r} declares no auth method")
    _PROVIDERS[cls.name] = cls
    return cls


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the catalog; its provider must already be registered."""
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is registered twice")
    provider = get_provider(preset.provider)
    if preset.auth_method and not provider.auth_method(preset.auth_method):
        raise ValueError(f"preset {preset.name!r} names unknown auth method {preset.auth_method!r}")
    _PRESETS[preset.name] = preset
    return preset


def get_provider(name: str) -> type[Provider]:
    """The provider type registered as `name`; KeyError if there is none."""
    _load()
    return _PROVIDERS[name]


def find_provider(name: str) -> type[Provider] | None:
    _load()
    return _PROVIDERS.get(name)


def all_providers() -> list[type[Provider]]:
    _load()
    return sorted(_PROVIDERS.values(), key=lambda p: p.label.lower())


def get_preset(name: str) -> Preset:
    _load()
    return _PRESETS[name]


def all_presets() -> list[Preset]:
    _load()
    return list(_PRESETS.values())


def _load() -> None:
    # The built-in catalog registers itself on import; importing here keeps callers simple.
    from . import catalog  # noqa: F401


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str | None, *, keep_path: bool = False) -> str:
    """`scheme://host:port` of a URL (plus its path and query when `keep_path`), with the
    scheme and host lower-cased, a trailing dot removed and the default port written out:
    the form destinations are compared in. A value that is not a URL is returned as is, so
    that any change of it still counts as a change."""
    if not url:
        return ""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not scheme or not host:
        return url
    port = port if port is not None else _DEFAULT_PORTS.get(scheme, 0)
    host = f"[{host}]" if ":" in host else host
    origin = f"{scheme}://{host}:{port}"
    if keep_path:
        path = parts.path or "/"
        origin += path + (f"?{parts.query}" if parts.query else "")
    return origin


def host_of(url: str | None) -> str:
    """Host (and port) of a URL, lower-cased, for "did the endpoint change?" checks."""
    if not url:
        return ""
    parts = urlsplit(url)
    return (parts.netloc.rsplit("@", 1)[-1]).lower()
