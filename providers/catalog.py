"""The built-in provider types and presets. Add a provider by adding a class here.

Self-hosted servers that speak OpenAI's API (Ollama's /v1, LM Studio, vLLM) are reached through
that API: one wire format that every one of them documents, and the one the gateway forwards
directly. litellm prefixes follow https://docs.litellm.ai/docs/providers.
"""

import json

from .base import (
    API_KEY,
    CHAT,
    CUSTOM_HEADER,
    EMBEDDINGS,
    NO_AUTH,
    OAUTH_CLIENT_CREDENTIALS,
    NO_KEY,
    TEST_PROMPT,
    WIRE_ANTHROPIC,
    AuthMethod,
    Field,
    OpenAIWireProvider,
    Preset,
    Provider,
    register,
    register_preset,
)

CHAT_AND_EMBEDDINGS = frozenset({CHAT, EMBEDDINGS})
# A cloud region or location: lower-case words and digits joined by hyphens (us-east-1,
# europe-west4, global), never a dot, slash or anything else a host name could be built from.
REGION_PATTERN = r"[a-z][a-z0-9]*(?:-[a-z0-9]+){0,4}"


@register
class OpenAI(OpenAIWireProvider):
    name = "openai"
    label = "OpenAI"
    litellm_prefix = "openai"
    default_base_url = "https://api.openai.com/v1"
    fields = (Field("organization", "Organization ID", help_text="Optional OpenAI-Organization."),)
    capabilities = CHAT_AND_EMBEDDINGS
    models = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini",
              "text-embedding-3-small", "text-embedding-3-large")
    docs_url = "https://platform.openai.com/docs/api-reference"
    # OpenAI's reasoning models refuse max_tokens; litellm renames it the same way.
    test_token_limit = "max_completion_tokens"

    @classmethod
    def litellm_settings(cls, config):
        return {"organization": config["organization"]} if config.get("organization") else {}


@register
class AzureOpenAI(Provider):
    name = "azure_openai"
    label = "Azure OpenAI"
    litellm_prefix = "azure"
    base_url_required = True
    key_headers = ("api-key",)
    auth_methods = (
        API_KEY,
        AuthMethod(
            "azure_ad_client_credentials",
            "Microsoft Entra ID (service principal)",
            (
                # The token endpoint is built from it (login.microsoftonline.com/{tenant}/...).
                Field("tenant_id", "Tenant ID", required=True, destination=True,
                      pattern=r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}",
                      pattern_help="a tenant GUID or domain name"),
                Field("client_id", "Client ID", required=True),
                Field("client_secret", "Client secret", required=True, secret=True),
            ),
        ),
    )
    fields = (
        Field("api_version", "API version", required=True, default="2024-10-21",
              help_text="The Azure OpenAI REST API version."),
    )
    capabilities = CHAT_AND_EMBEDDINGS
    docs_url = "https://learn.microsoft.com/azure/ai-services/openai/reference"
    placeholder_key = True  # litellm calls Azure through OpenAI's SDK

    @classmethod
    def litellm_settings(cls, config):
        return {"api_version": config.get("api_version")}

    @classmethod
    def model_string(cls, model: str) -> str:
        # Azure addresses deployments, not models: the "model" is the deployment name.
        return f"azure/{model}"


@register
class Anthropic(Provider):
    name = "anthropic"
    label = "Anthropic"
    litellm_prefix = "anthropic"
    litellm_http_handler = True
    default_base_url = "https://api.anthropic.com"
    key_headers = ("x-api-key",)
    wire = WIRE_ANTHROPIC
    models = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
    docs_url = "https://docs.anthropic.com/en/api"
    api_version = "2023-06-01"  # the anthropic-version header

    @classmethod
    def auth_headers(cls, kwargs):
        headers = {"anthropic-version": cls.api_version}
        if kwargs.get("api_key") and kwargs["api_key"] != NO_KEY:
            headers["x-api-key"] = kwargs["api_key"]
        return headers

    @classmethod
    def test_request(cls, kwargs, model, endpoint):
        if endpoint == EMBEDDINGS:
            return None  # no embeddings API of its own: litellm says so
        base = kwargs["api_base"].rstrip("/")
        url = base if base.endswith("/v1/messages") else f"{base}/v1/messages"
        return url, cls.check_headers(kwargs), \
            {"model": model, "max_tokens": 1, "messages": TEST_PROMPT}, "content"

    @classmethod
    def list_request(cls, kwargs, base):
        return f"{base}/v1/models", cls.check_headers(kwargs)


@register
class Gemini(Provider):
    name = "gemini"
    label = "Google Gemini (AI Studio)"
    litellm_prefix = "gemini"
    litellm_http_handler = True
    default_base_url = "https://generativelanguage.googleapis.com"
    key_headers = ("x-goog-api-key",)
    capabilities = CHAT_AND_EMBEDDINGS
    models = ("gemini-2.5-pro", "gemini-2.5-flash", "text-embedding-004")

    @classmethod
    def auth_headers(cls, kwargs):
        # The header, not ?key=: URLs end up in logs.
        return {"x-goog-api-key": kwargs["api_key"]} if kwargs.get("api_key") else {}

    @classmethod
    def list_request(cls, kwargs, base):
        return f"{base}/v1beta/models", cls.check_headers(kwargs)

    @classmethod
    def parse_models(cls, data):
        items = [m.get("name", "").removeprefix("models/") for m in data.get("models") or []]
        page = data.get("nextPageToken")
        return items, ({"pageToken": page} if page else {})


@register
class VertexAI(Provider):
    name = "vertex_ai"
    label = "Google Vertex AI"
    litellm_prefix = "vertex_ai"
    litellm_http_handler = True
    auth_methods = (
        AuthMethod(
            "service_account",
            "Service account key (JSON)",
            (Field("service_account_json", "Service account JSON", required=True, secret=True,
                   multiline=True),),  # the key file as Google gives it (pretty-printed)
        ),
    )
    fields = (
        # Both build the endpoint ({location}-aiplatform.googleapis.com/.../projects/{project}).
        Field("project_id", "GCP project ID", required=True, destination=True,
              pattern=r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,61}[a-z0-9]",
              pattern_help="a GCP project ID (lower-case letters, digits and hyphens)"),
        Field("location", "Location", required=True, default="us-central1", destination=True,
              pattern=REGION_PATTERN, pattern_help="a region name such as us-central1"),
    )
    capabilities = CHAT_AND_EMBEDDINGS
    models = ("gemini-2.5-pro", "gemini-2.5-flash", "text-embedding-005")

    @classmethod
    def endpoint_url(cls, *, base_url, config):
        return base_url or \
            f"https://{config.get('location') or 'us-central1'}-aiplatform.googleapis.com"

    @classmethod
    def litellm_settings(cls, config):
        return {"vertex_project": config.get("project_id"),
                "vertex_location": config.get("location")}

    # Google's OAuth token endpoint: the one place a service account's signed assertion goes
    # (google-auth fetches the token there, inside litellm).
    TOKEN_URI = "https://oauth2.googleapis.com/token"
    token_urls = (TOKEN_URI,)

    @classmethod
    def secret_problems(cls, auth_method, secrets):
        """Only a service account key, whose token URL is Google's: litellm hands any other
        Google credential to google-auth, which reads the files, runs the programs or calls
        the URLs it names (external_account), sends a refresh token where it says
        (authorized_user), or opens a value that is a path on this server as a key file."""
        raw = (secrets or {}).get("service_account_json")
        if auth_method != "service_account" or not raw:
            return []
        try:
            info = json.loads(raw)
        except (TypeError, ValueError):
            info = None
        if not isinstance(info, dict):
            return ["'service_account_json' must be the service account's JSON key file as "
                    "Google gives it (a JSON object starting with {)."]
        if info.get("type") != "service_account":
            kind = info.get("type")
            return ["'service_account_json' must be a service account key "
                    f"(\"type\": \"service_account\"), not {str(kind)[:40]!r}: other Google "
                    "credential types (external_account, authorized_user) make the server read "
                    "files, run programs or call URLs named in the JSON, and are refused."]
        missing = [k for k in ("client_email", "private_key")
                   if not isinstance(info.get(k), str) or not info[k].strip()]
        if missing:
            return [f"'service_account_json' has no {' or '.join(missing)}: paste the whole "
                    "key file."]
        token_uri = info.get("token_uri")
        if token_uri not in (None, cls.TOKEN_URI):
            return ["'service_account_json' sends its signed assertion to "
                    f"{str(token_uri)[:100]!r}; only Google's {cls.TOKEN_URI} is accepted."]
        return []


@register
class Bedrock(Provider):
    name = "bedrock"
    label = "AWS Bedrock"
    litellm_prefix = "bedrock"
    litellm_http_handler = True
    auth_methods = (
        AuthMethod(
            "aws_access_key",
            "AWS access key",
            (
                Field("aws_access_key_id", "Access key ID", required=True),
                Field("aws_secret_access_key", "Secret access key", required=True, secret=True),
                Field("aws_session_token", "Session token", secret=True,
                      help_text="Only for temporary credentials."),
            ),
        ),
        AuthMethod(
            "api_key", "Bedrock API key",
            (Field("api_key", "API key", required=True, secret=True),),
        ),
    )
    # Builds the host (bedrock-runtime.{region}.amazonaws.com): a plain region token only.
    fields = (Field("aws_region_name", "AWS region", required=True, default="us-east-1",
                    destination=True, pattern=REGION_PATTERN,
                    pattern_help="an AWS region such as us-east-1"),)
    capabilities = CHAT_AND_EMBEDDINGS
    models = ("anthropic.claude-3-5-sonnet-20240620-v1:0", "amazon.titan-embed-text-v2:0")

    @classmethod
    def endpoint_url(cls, *, base_url, config):
        region = config.get("aws_region_name") or "us-east-1"
        return base_url or f"https://bedrock-runtime.{region}.amazonaws.com"

    @classmethod
    def litellm_endpoint(cls, base_url):
        return {"aws_bedrock_runtime_endpoint": base_url} if base_url else {}

    @classmethod
    def litellm_settings(cls, config):
        return {"aws_region_name": config.get("aws_region_name")}


@register
class Mistral(OpenAIWireProvider):
    name = "mistral"
    label = "Mistral AI"
    litellm_prefix = "mistral"
    default_base_url = "https://api.mistral.ai/v1"
    capabilities = CHAT_AND_EMBEDDINGS
    models = ("mistral-large-latest", "mistral-small-latest", "mistral-embed")


@register
class Groq(OpenAIWireProvider):
    name = "groq"
    label = "Groq"
    litellm_prefix = "groq"
    default_base_url = "https://api.groq.com/openai/v1"
    models = ("llama-3.3-70b-versatile", "llama-3.1-8b-instant")


@register
class TogetherAI(OpenAIWireProvider):
    name = "together_ai"
    label = "Together AI"
    litellm_prefix = "together_ai"
    default_base_url = "https://api.together.xyz/v1"
    capabilities = CHAT_AND_EMBEDDINGS
    models = ("meta-llama/Llama-3.3-70B-Instruct-Turbo",)


@register
class DeepSeek(OpenAIWireProvider):
    name = "deepseek"
    label = "DeepSeek"
    litellm_prefix = "deepseek"
    default_base_url = "https://api.deepseek.com"
    models = ("deepseek-chat", "deepseek-reasoner")


@register
class XAI(OpenAIWireProvider):
    name = "xai"
    label = "xAI (Grok)"
    litellm_prefix = "xai"
    default_base_url = "https://api.x.ai/v1"
    models = ("grok-4.3", "grok-4.20", "grok-code-fast-1")
    docs_url = "https://docs.x.ai/docs/api-reference"


@register
class OpenRouter(OpenAIWireProvider):
    name = "openrouter"
    label = "OpenRouter"
    litellm_prefix = "openrouter"
    default_base_url = "https://openrouter.ai/api/v1"
    models = ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5")


@register
class Ollama(OpenAIWireProvider):
    name = "ollama"
    label = "Ollama"
    # Ollama's OpenAI-compatible API (https://github.com/ollama/ollama/blob/main/docs/openai.md).
    litellm_prefix = "openai"
    default_base_url = "http://localhost:11434/v1"
    auth_methods = (NO_AUTH, API_KEY, CUSTOM_HEADER)
    capabilities = CHAT_AND_EMBEDDINGS
    api_path = "/v1"


@register
class LMStudio(OpenAIWireProvider):
    name = "lmstudio"
    label = "LM Studio"
    litellm_prefix = "lm_studio"
    default_base_url = "http://localhost:1234/v1"
    auth_methods = (NO_AUTH, API_KEY)
    capabilities = CHAT_AND_EMBEDDINGS
    api_path = "/v1"


@register
class VLLM(OpenAIWireProvider):
    name = "vllm"
    label = "vLLM"
    litellm_prefix = "hosted_vllm"
    default_base_url = "http://localhost:8000/v1"
    auth_methods = (NO_AUTH, API_KEY, CUSTOM_HEADER)
    capabilities = CHAT_AND_EMBEDDINGS
    api_path = "/v1"


@register
class LiteLLMProxy(OpenAIWireProvider):
    name = "litellm_proxy"
    label = "LiteLLM proxy"
    litellm_prefix = "litellm_proxy"
    base_url_required = True
    auth_methods = (
        # The proxy reads its virtual keys from the x-litellm-api-key header as well as from
        # Authorization; the header keeps a gateway in front of it free to use Authorization.
        AuthMethod(
            "api_key",
            "LiteLLM virtual key (x-litellm-api-key)",
            (Field("api_key", "Virtual key", required=True, secret=True),),
        ),
        NO_AUTH,
        CUSTOM_HEADER,
        OAUTH_CLIENT_CREDENTIALS,
    )
    capabilities = CHAT_AND_EMBEDDINGS
    docs_url = "https://docs.litellm.ai/docs/proxy/virtual_keys"
    api_path = "/v1"

    api_key_header = "x-litellm-api-key"


@register
class OpenAICompatible(OpenAIWireProvider):
    name = "openai_compatible"
    label = "OpenAI-compatible server"
    litellm_prefix = "openai"
    base_url_required = True
    auth_methods = (API_KEY, NO_AUTH, CUSTOM_HEADER, OAUTH_CLIENT_CREDENTIALS)
    capabilities = CHAT_AND_EMBEDDINGS


register_preset(Preset(
    "ollama", "Ollama (this machine)", "ollama",
    description="A local Ollama server on its default port, no key.",
    auth_method="none", default_model="llama3.2",
))
register_preset(Preset(
    "lmstudio", "LM Studio (this machine)", "lmstudio",
    description="LM Studio's local server on its default port, no key.",
    auth_method="none",
))
register_preset(Preset(
    "vllm", "vLLM server", "vllm",
    description="A vLLM OpenAI-compatible server; change the base URL to yours.",
    auth_method="none",
))
register_preset(Preset(
    "openrouter", "OpenRouter", "openrouter",
    description="Hundreds of models behind one OpenRouter key.",
    default_model="openai/gpt-4o-mini",
))
register_preset(Preset(
    "openai", "OpenAI", "openai", description="OpenAI's API with an API key.",
    default_model="gpt-4o-mini",
))
register_preset(Preset(
    "anthropic", "Anthropic", "anthropic", description="Anthropic's API with an API key.",
    default_model="claude-haiku-4-5",
))
register_preset(Preset(
    "litellm_proxy", "LiteLLM proxy", "litellm_proxy",
    description="A team's LiteLLM proxy with a virtual key; set its base URL.",
))
