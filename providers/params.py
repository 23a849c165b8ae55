"""A connection's settings as litellm call arguments: how each auth method is spoken, with the
provider class (providers.base / catalog) adding its endpoint and its own settings.

    kwargs = litellm_kwargs(provider="litellm_proxy", auth_method="api_key",
                            base_url="https://proxy.example.com", config={},
                            secrets={"api_key": "sk-..."}, model="gpt-4o-mini")
    # {"model": "litellm_proxy/gpt-4o-mini", "api_base": "https://proxy.example.com",
    #  "api_key": "llmconn-no-key", "extra_headers": {"x-litellm-api-key": "sk-..."}}

The signature is stable (keyword-only): workspaces' resolution and the gateway build on it. The
result holds secrets: pass it to litellm (through providers.checks) and nowhere else; never log
it (use `redacted(kwargs)`), and scrub text with `secret_values(kwargs)` if you must keep any.

What each auth method becomes (litellm's parameters: https://docs.litellm.ai/docs/completion/input):
- api_key: `api_key` (litellm sends it as its provider expects: Bearer, x-api-key...); for the
  LiteLLM proxy the key goes in the `x-litellm-api-key` header instead, so Authorization stays
  free for a gateway in front of the proxy.
- none: a placeholder `api_key` (litellm's OpenAI client refuses to start without one).
- custom_header: `extra_headers={header_name: header_value}` and a placeholder `api_key`.
- oauth_client_credentials: a token from `config["token_url"]` (providers.oauth, cached) sent as
  the Bearer `api_key`.
- azure_ad_client_credentials: a Microsoft Entra token (client credentials against
  login.microsoftonline.com) as `azure_ad_token`.
- service_account (Vertex): `vertex_credentials`, `vertex_project`, `vertex_location`.
- aws_access_key (Bedrock): `aws_access_key_id`, `aws_secret_access_key`,
  `aws_session_token`, `aws_region_name`.
Provider fields (each class's `litellm_settings`): Azure `api_version`, OpenAI `organization`,
Bedrock `aws_region_name`, Vertex `vertex_project` and `vertex_location`.

Getting an OAuth token is network I/O: `litellm_kwargs` does it synchronously (commands,
Celery tasks), `alitellm_kwargs` asynchronously (ASGI views, the health sweep).
"""

from __future__ import annotations

import copy

from .base import NO_KEY, find_provider
from .errors import AUTH, BAD_REQUEST, BLOCKED, ProviderError
from .validation import config_with_defaults

__all__ = ["NO_KEY", "litellm_kwargs", "alitellm_kwargs", "endpoint_url", "oauth_args",
           "pop_ca_cert", "secret_values", "redacted"]
AZURE_AD_TOKEN_URL = "https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token"
AZURE_AD_SCOPE = "https://cognitiveservices.azure.com/.default"
# The connection's `config.ca_cert` (PEM) travels with the call kwargs under this key; callers
# take it out (`pop_ca_cert`) before litellm sees them and hand it to providers.transport.
CA_CERT_KWARG = "llmconn_ca_cert"
SECRET_KWARGS = ("api_key", "azure_ad_token", "aws_secret_access_key", "aws_session_token",
                 "vertex_credentials")


def _spec(provider: str):
    spec = find_provider(provider)
    if spec is None:
        raise ProviderError(BAD_REQUEST, f"Unknown provider {provider!r}.")
    return spec


def _secrets(secrets) -> dict:
    if secrets is None:
        return {}
    if not isinstance(secrets, dict):  # connections.fields.UNREADABLE
        raise ProviderError(AUTH, "The stored credentials cannot be decrypted (encrypted with a "
                            "key that is no longer configured): enter them again.")
    return secrets


def _need(secrets: dict, name: str, label: str) -> str:
    value = secrets.get(name)
    if not value:
        raise ProviderError(AUTH, f"No {label} is stored for this connection.")
    return value


def _oauth_args(auth_method: str, config: dict, secrets: dict) -> dict | None:
    """Arguments for providers.oauth.get_token, or None when the auth method needs no token."""
    if auth_method == "oauth_client_credentials":
        return {"token_url": config.get("token_url") or "",
                "client_id": config.get("client_id") or "",
                "client_secret": _need(secrets, "client_secret", "OAuth client secret"),
                "scope": config.get("scope") or "", "audience": config.get("audience") or "",
                "ca_cert": _ca_cert(config)}
    if auth_method == "azure_ad_client_credentials":
        tenant = config.get("tenant_id") or ""
        return {"token_url": AZURE_AD_TOKEN_URL.format(tenant_id=tenant),
                "client_id": config.get("client_id") or "",
                "client_secret": _need(secrets, "client_secret", "client secret"),
                "scope": AZURE_AD_SCOPE, "audience": "", "ca_cert": _ca_cert(config)}
    return None


def _ca_cert(config: dict) -> str:
    """The connection's private CA (PEM), trusted by its token fetches as by its calls."""
    value = config.get("ca_cert")
    return value if isinstance(value, str) and value.strip() else ""


def oauth_args(*, auth_method: str, config: dict, secrets) -> dict | None:
    """The token request a connection needs (for providers.oauth.invalidate after a 401)."""
    return _oauth_args(auth_method, config or {}, _secrets(secrets))


def endpoint_url(*, provider: str, base_url: str | None, config: dict) -> str | None:
    """The URL calls will go to (for the egress check and for messages); None if unknown."""
    spec = _spec(provider)
    return spec.endpoint_url(base_url=base_url,
                             config=config_with_defaults(provider, "", config or {}))


def _build(*, provider: str, auth_method: str, base_url: str | None, config: dict | None,
           secrets, model: str, token: str | None) -> dict:
    spec = _spec(provider)
    if spec.auth_method(auth_method) is None:
        raise ProviderError(BAD_REQUEST, f"{spec.label} has no auth method {auth_method!r}.")
    if not model:
        raise ProviderError(BAD_REQUEST, "No model given: set the connection's default model "
                            "or name one.")
    secrets = _secrets(secrets)
    config = config_with_defaults(provider, auth_method, config or {})
    kwargs: dict = {"model": spec.model_string(model)}
    if token:  # a fetched OAuth/Entra token is a secret too: scrubbed from logs and answers
        from llmconn.redaction import remember

        remember(token)

    kwargs.update(spec.litellm_endpoint(base_url))
    wants_key = spec.placeholder_key
    if auth_method == "api_key":
        key = _need(secrets, "api_key", "API key")
        header = getattr(spec, "api_key_header", None)
        if header:
            kwargs["api_key"] = NO_KEY
            kwargs["extra_headers"] = {header: key}
        else:
            kwargs["api_key"] = key
    elif auth_method == "none":
        if wants_key:
            kwargs["api_key"] = NO_KEY
    elif auth_method == "custom_header":
        name = config.get("header_name") or "Authorization"
        kwargs["extra_headers"] = {name: _need(secrets, "header_value", "header value")}
        if wants_key:
            kwargs["api_key"] = NO_KEY
    elif auth_method == "oauth_client_credentials":
        kwargs["api_key"] = token
    elif auth_method == "azure_ad_client_credentials":
        kwargs["azure_ad_token"] = token
    elif auth_method == "service_account":
        kwargs["vertex_credentials"] = _need(secrets, "service_account_json",
                                             "service account JSON")
    elif auth_method == "aws_access_key":
        kwargs["aws_access_key_id"] = config.get("aws_access_key_id") or ""
        kwargs["aws_secret_access_key"] = _need(secrets, "aws_secret_access_key",
                                                "AWS secret access key")
        if secrets.get("aws_session_token"):
            kwargs["aws_session_token"] = secrets["aws_session_token"]
    problems = spec.secret_problems(auth_method, secrets)
    if problems:  # a value stored before a rule (validation refuses it now): never sent
        raise ProviderError(BLOCKED, f"Refused: {problems[0]}")

    kwargs.update(spec.litellm_settings(config))
    extra = config.get("extra_headers")
    if isinstance(extra, dict) and extra:
        # Non-secret headers sent on every call (names refused by providers.headers never get
        # here); the auth method's own header wins over a same-named one.
        kwargs["extra_headers"] = {**{str(k): str(v) for k, v in extra.items()},
                                   **(kwargs.get("extra_headers") or {})}
    if _ca_cert(config):
        kwargs[CA_CERT_KWARG] = config["ca_cert"]
    return kwargs


def pop_ca_cert(kwargs: dict) -> tuple[dict, str]:
    """(kwargs without the CA certificate, the PEM or "")."""
    if CA_CERT_KWARG not in kwargs:
        return kwargs, ""
    rest = dict(kwargs)
    return rest, rest.pop(CA_CERT_KWARG) or ""


def litellm_kwargs(*, provider: str, auth_method: str, base_url: str | None, config: dict | None,
                   secrets: dict | None, model: str) -> dict:
    """litellm call kwargs (model string, api_base, credentials, headers) for a connection.

    Raises ProviderError (error_class auth / bad_request / blocked / ...) when the settings
    cannot make a call, e.g. a missing secret or an OAuth token endpoint that refuses. Fetches
    an OAuth token synchronously when the auth method needs one (cached; see providers.oauth).
    """
    token = None
    args = _oauth_args(auth_method, config_with_defaults(provider, auth_method, config or {}),
                       _secrets(secrets))
    if args:
        from .oauth import get_token

        token = get_token(**args)
    return _build(provider=provider, auth_method=auth_method, base_url=base_url, config=config,
                  secrets=secrets, model=model, token=token)


async def alitellm_kwargs(*, provider: str, auth_method: str, base_url: str | None,
                          config: dict | None, secrets: dict | None, model: str) -> dict:
    """`litellm_kwargs` for async code: the OAuth token (if any) is fetched without blocking."""
    token = None
    args = _oauth_args(auth_method, config_with_defaults(provider, auth_method, config or {}),
                       _secrets(secrets))
    if args:
        from .oauth import aget_token

        token = await aget_token(**args)
    return _build(provider=provider, auth_method=auth_method, base_url=base_url, config=config,
                  secrets=secrets, model=model, token=token)


def secret_values(kwargs: dict) -> list[str]:
    """Every secret value inside litellm kwargs (for scrubbing text that must be kept)."""
    values = [kwargs[k] for k in SECRET_KWARGS if isinstance(kwargs.get(k), str)]
    values += [v for v in (kwargs.get("extra_headers") or {}).values() if isinstance(v, str)]
    return [v for v in values if v and v != NO_KEY]


def redacted(kwargs: dict) -> dict:
    """A copy of litellm kwargs safe to log: secret values replaced by "[redacted]"."""
    out = copy.deepcopy(kwargs)
    for k in SECRET_KWARGS:
        if out.get(k) and out[k] != NO_KEY:
            out[k] = "[redacted]"
    if out.get("extra_headers"):
        out["extra_headers"] = {k: "[redacted]" for k in out["extra_headers"]}
    return out
