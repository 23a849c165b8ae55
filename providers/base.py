"""The provider catalog's building blocks: fields, auth methods, providers, presets, registry.

A provider type is a `Provider` subclass registered by name with `@register`. It declares what
the API, the admin forms and validation need to know: its label, litellm prefix, auth methods
and their fields (which are secret), provider-level fields (Azure's api_version, Vertex's
project), default base URL and capabilities. Presets are named starting points (Ollama on
localhost, OpenRouter...) registered with `register_preset`. Nothing else lists providers.

A provider class also carries its behaviour; the modules that talk to providers ask it and
never test a provider's name or wire format themselves (tests/providers/test_provider_classes.py
greps for that):
- litellm arguments: `endpoint_url`, `litellm_endpoint`, `litellm_settings`,
  `placeholder_key` (used by providers.params);
- the connection test and the models listing: `test_request`, `list_request`,
  `parse_models` (providers.checks);
- direct forwarding of /v1 calls: `direct_target` (providers.forward);
- destination fields: `destination_fields`, `destination` (connections' write rules).
`OpenAIWireProvider` implements the OpenAI wire format once; a provider that speaks it
subclasses it and sets its name, prefix and base URL. Error mapping is the same for every
provider (providers.errors reads exception types and HTTP statuses, never provider names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
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

# Sent where litellm's OpenAI client insists on an api_key but the connection has none (auth
# "none", a custom header, or a LiteLLM proxy key that travels in its own header).
NO_KEY = "llmconn-no-key"
# The one-word prompt of a connection test.
TEST_PROMPT = [{"role": "user", "content": "ping"}]


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
    # URLs the provider's own client library fetches credentials from on litellm's paths
    # (e.g. Google's token endpoint): checked against the egress policy before each call.
    token_urls: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def auth_method(cls, name: str) -> AuthMethod | None:
        return _auth_methods_by_name(cls).get(name)

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

    # --- behaviour: litellm arguments (providers.params) -------------------------------------

    # litellm's client for this provider refuses to start without an api_key, so a connection
    # without one (auth "none", a custom header) sends NO_KEY (OpenAI's SDK: OpenAI-wire, Azure).
    placeholder_key: ClassVar[bool] = False

    @classmethod
    def endpoint_url(cls, *, base_url: str | None, config: dict) -> str | None:
        """The URL calls go to (for the egress check and for messages); None if unknown.
        `config` has the catalog defaults filled in."""
        return base_url or cls.default_base_url

    @classmethod
    def litellm_endpoint(cls, base_url: str | None) -> dict:
        """The litellm kwargs that name the endpoint: `api_base` when the connection gives a
        base URL, or when the provider has a default one and a known wire format (litellm
        knows the others' endpoints)."""
        effective = cls.effective_base_url(base_url)
        if base_url or (effective and cls.wire != WIRE_OTHER):
            return {"api_base": effective.rstrip("/")}
        return {}

    @classmethod
    def litellm_settings(cls, config: dict) -> dict:
        """litellm kwargs from provider-level fields (`config` with defaults filled in)."""
        return {}

    @classmethod
    def secret_problems(cls, auth_method: str, secrets: dict) -> list[str]:
        """What is wrong with secret values beyond their fields' generic rules (checked when
        they are saved and again before every call: a stored value may predate a rule).
        Messages never quote a secret."""
        return []

    # --- behaviour: connection test and model listing (providers.checks) ---------------------

    @classmethod
    def test_request(cls, kwargs: dict, model: str, endpoint: str
                     ) -> tuple[str, dict, dict, str] | None:
        """(url, headers, JSON body, key a good answer holds a list under) of a minimal test
        call sent directly over the transport, as litellm would send it; None: the test goes
        through litellm. `kwargs` are the connection's litellm kwargs (with `api_base`),
        `endpoint` is "chat" or "embeddings"."""
        return None

    @classmethod
    def list_request(cls, kwargs: dict, base: str) -> tuple[str, dict] | None:
        """(url, headers) of the live models listing; None when the provider has none (its
        catalog list is used)."""
        return None

    @classmethod
    def auth_headers(cls, kwargs: dict) -> dict:
        """The headers that carry the credentials (and API version) of a test or listing
        request built from litellm kwargs."""
        return {}

    @classmethod
    def check_headers(cls, kwargs: dict) -> dict:
        """The headers of `test_request` and `list_request`: JSON, `auth_headers`, then the
        connection's `config.extra_headers` (which may replace ours, as on calls)."""
        return {"Accept": "application/json", **cls.auth_headers(kwargs),
                **(kwargs.get("extra_headers") or {})}

    @classmethod
    def has_live_listing(cls) -> bool:
        return cls.list_request.__func__ is not Provider.list_request.__func__

    @classmethod
    def parse_models(cls, data: dict) -> tuple[list, dict]:
        """(model ids, query parameters of the next page or {}) of one listing page, in the
        `{"data": [{"id"}], "has_more", "last_id"}` shape OpenAI and Anthropic answer."""
        items = [m.get("id") for m in data.get("data") or [] if isinstance(m, dict)]
        page = data.get("last_id") if data.get("has_more") else None
        return items, ({"after_id": page} if page else {})

    # --- behaviour: direct forwarding of /v1 calls (providers.forward) -----------------------

    @classmethod
    def direct_target(cls, call: dict) -> tuple[str, str, dict] | None:
        """(base URL, model name, headers) when a /v1 call (its litellm kwargs) can be sent to
        the provider as the client sent it, without litellm; None: litellm translates it."""
        return None

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


def _bearer_headers(kwargs: dict) -> dict:
    """The Authorization (and OpenAI-Organization) headers of OpenAI's wire format."""
    headers = {}
    key = kwargs.get("api_key")
    if key and key != NO_KEY:
        headers["Authorization"] = f"Bearer {key}"
    if kwargs.get("organization"):
        headers["OpenAI-Organization"] = kwargs["organization"]
    return headers


class OpenAIWireProvider(Provider):
    """A provider that speaks OpenAI's HTTP API (`/chat/completions`, `/embeddings`,
    `/models`): tested, listed and forwarded directly over providers.transport, without
    litellm. Subclass it for an OpenAI-compatible provider."""

    wire: ClassVar[str] = WIRE_OPENAI
    placeholder_key: ClassVar[bool] = True
    # The parameter that caps a test's answer at one token.
    test_token_limit: ClassVar[str] = "max_tokens"
    # Keys of litellm kwargs (providers.params) a direct call knows how to send; a call with
    # any other key goes through litellm.
    direct_keys: ClassVar[frozenset[str]] = frozenset({
        "model", "api_base", "api_key", "extra_headers", "organization", "llmconn_ca_cert"})

    @classmethod
    def auth_headers(cls, kwargs):
        return _bearer_headers(kwargs)

    @classmethod
    def test_request(cls, kwargs, model, endpoint):
        base = kwargs["api_base"].rstrip("/")
        if endpoint == EMBEDDINGS:
            url, body, expect = f"{base}/embeddings", {"model": model, "input": ["ping"]}, "data"
        else:
            url, body, expect = (f"{base}/chat/completions",
                                 {"model": model, "messages": TEST_PROMPT,
                                  cls.test_token_limit: 1}, "choices")
        return url, cls.check_headers(kwargs), body, expect

    @classmethod
    def list_request(cls, kwargs, base):
        return f"{base}/models", cls.check_headers(kwargs)

    @classmethod
    def direct_target(cls, call):
        model = call.get("model") or ""
        prefix, sep, name = model.partition("/")
        base = call.get("api_base")
        if not sep or not name or not base or not cls.direct_keys.issuperset(call):
            return None
        headers = {k.lower(): v for k, v in _bearer_headers(call).items()}
        for header, value in (call.get("extra_headers") or {}).items():
            headers[str(header).lower()] = value  # replaces ours (e.g. a custom Authorization)
        return base.rstrip("/"), name, headers


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


_LOADED: list = []


def _load() -> None:
    # The built-in catalog registers itself on import; importing here keeps callers simple
    # (once: an import statement costs more than this check on every gateway call).
    if not _LOADED:
        from . import catalog  # noqa: F401

        _LOADED.append(True)


@cache
def _auth_methods_by_name(provider: type[Provider]) -> dict[str, AuthMethod]:
    """A provider's auth methods by name (its class attribute never changes once defined)."""
    return {m.name: m for m in provider.auth_methods}


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
