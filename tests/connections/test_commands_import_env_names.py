"""import_env_connections with AnythingLLM's and OpenHands' variable names (README table)."""

import io

import pytest
from django.core.management import call_command

from connections.env_import import split_litellm_model
from connections.models import Connection
from workspaces.models import SystemDefault

pytestmark = pytest.mark.django_db

EVERY_NAME = [
    "OPENAI_API_KEY", "OPEN_AI_KEY", "OPENAI_MODEL", "OPEN_MODEL_PREF", "OPENAI_BASE_URL",
    "OPENAI_API_BASE", "OPENAI_ORGANIZATION", "OPENAI_ORG_ID", "ANTHROPIC_API_KEY",
    "ANTHROPIC_MODEL", "ANTHROPIC_MODEL_PREF", "ANTHROPIC_BASE_URL", "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_VERSION",
    "OPENAI_API_VERSION", "AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_DEPLOYMENT_NAME",
    "OLLAMA_BASE_URL", "OLLAMA_HOST", "OLLAMA_BASE_PATH", "OLLAMA_MODEL", "OLLAMA_MODEL_PREF",
    "OPENROUTER_API_KEY", "OPENROUTER_MODEL", "OPENROUTER_MODEL_PREF", "LMSTUDIO_BASE_PATH",
    "LMSTUDIO_MODEL_PREF", "LITE_LLM_BASE_PATH", "LITE_LLM_API_KEY", "LITE_LLM_MODEL_PREF",
    "GENERIC_OPEN_AI_BASE_PATH", "GENERIC_OPEN_AI_API_KEY", "GENERIC_OPEN_AI_MODEL_PREF",
    "GROQ_API_KEY", "GROQ_MODEL_PREF", "GEMINI_API_KEY", "GEMINI_LLM_MODEL_PREF",
    "MISTRAL_API_KEY", "MISTRAL_MODEL_PREF", "LLM_PROVIDER", "LLM_MODEL", "LLM_API_KEY",
    "LLM_BASE_URL", "LLM_EMBEDDING_PROVIDER", "LLM_EMBEDDING_MODEL", "EMBEDDING_MODEL",
    "EMBEDDING_ENGINE", "EMBEDDING_MODEL_PREF",
]

ANYTHINGLLM = {
    "LLM_PROVIDER": "litellm",
    "LITE_LLM_BASE_PATH": "http://127.0.0.1:4000",
    "LITE_LLM_API_KEY": "sk-litellm-virtual-key-0001",
    "LITE_LLM_MODEL_PREF": "gpt-4o-mini",
    "OPEN_AI_KEY": "sk-anythingllm-openai-key-0002",
    "OPEN_MODEL_PREF": "gpt-4o",
    "OLLAMA_BASE_PATH": "http://127.0.0.1:11434",
    "OLLAMA_MODEL_PREF": "llama3",
    "GENERIC_OPEN_AI_BASE_PATH": "http://127.0.0.1:8080/v1",
    "GENERIC_OPEN_AI_API_KEY": "sk-generic-key-0003",
    "GENERIC_OPEN_AI_MODEL_PREF": "local-model",
    "EMBEDDING_ENGINE": "openai",
    "EMBEDDING_MODEL_PREF": "text-embedding-3-small",
}


@pytest.fixture
def env(monkeypatch):
    for name in EVERY_NAME:
        monkeypatch.delenv(name, raising=False)

    def set_(values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_env_connections", *args, stdout=out)
    return out.getvalue()


def _state():
    return (sorted((c.name, c.provider, c.auth_method, c.base_url, c.default_model,
                    dict(c.secrets)) for c in Connection.objects.all()),
            sorted((d.role, d.connection.name, d.model) for d in SystemDefault.objects.all()))


def test_anythingllm_names_become_connections_and_defaults(env):
    env(ANYTHINGLLM)
    run()
    conns = {c.name: c for c in Connection.objects.all()}
    assert set(conns) == {"litellm-env", "openai-env", "ollama-env", "generic-openai-env"}
    lite = conns["litellm-env"]
    assert (lite.provider, lite.base_url, lite.default_model, lite.secrets) == (
        "litellm_proxy", "http://127.0.0.1:4000/v1", "gpt-4o-mini",
        {"api_key": "sk-litellm-virtual-key-0001"})
    assert conns["openai-env"].default_model == "gpt-4o"
    assert conns["ollama-env"].base_url == "http://127.0.0.1:11434/v1"
    assert conns["ollama-env"].default_model == "llama3"
    assert conns["generic-openai-env"].provider == "openai_compatible"
    defaults = {d.role: (d.connection.name, d.model) for d in SystemDefault.objects.all()}
    assert defaults["chat"][0] == "litellm-env"
    assert defaults["embedding"] == ("openai-env", "text-embedding-3-small")
    before = _state()
    text = run()
    assert "Nothing changed" in text and _state() == before


def test_openhands_names_become_one_connection_and_the_chat_default(env):
    env({"LLM_MODEL": "anthropic/claude-sonnet-4-5", "LLM_API_KEY": "sk-ant-openhands-0004"})
    run()
    conn = Connection.objects.get()
    assert (conn.name, conn.provider, conn.default_model, conn.secrets) == (
        "openhands-env", "anthropic", "claude-sonnet-4-5", {"api_key": "sk-ant-openhands-0004"})
    chat = SystemDefault.objects.get(role="chat")
    assert (chat.connection_id, chat.model) == (conn.pk, "claude-sonnet-4-5")
    before = _state()
    assert "Nothing changed" in run() and _state() == before


def test_openhands_with_a_base_url_is_an_openai_compatible_server(env):
    env({"LLM_MODEL": "openai/qwen2.5", "LLM_BASE_URL": "http://127.0.0.1:8000/v1",
         "LLM_API_KEY": "sk-local-0005"})
    run()
    conn = Connection.objects.get()
    assert (conn.provider, conn.base_url, conn.default_model) == (
        "openai_compatible", "http://127.0.0.1:8000/v1", "qwen2.5")


@pytest.mark.parametrize("value,base,expected", [
    ("anthropic/claude-haiku-4-5", None, ("anthropic", "claude-haiku-4-5")),
    ("gpt-4o", None, ("openai", "gpt-4o")),
    ("claude-3-5-sonnet", None, ("anthropic", "claude-3-5-sonnet")),
    ("openai/gpt-4o", "http://h/v1", ("openai_compatible", "gpt-4o")),
    ("ollama/llama3", None, ("ollama", "llama3")),
    ("litellm_proxy/team-model", None, ("litellm_proxy", "team-model")),
    ("weird/thing", None, ("", "weird/thing")),
])
def test_litellm_model_strings_map_to_providers(value, base, expected):
    assert split_litellm_model(value, base_url=base) == expected
