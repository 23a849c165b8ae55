"""import_env_connections: legacy environment variables become connections and defaults."""

import io

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from connections.models import Connection
from tests.conftest import CANARY
from workspaces.models import SystemDefault

pytestmark = pytest.mark.django_db

LEGACY = {
    "OPENAI_API_KEY": CANARY,
    "ANTHROPIC_API_KEY": "sk-ant-legacy-key-000000001",
    "AZURE_OPENAI_API_KEY": "azure-legacy-key-0000000002",
    "AZURE_OPENAI_ENDPOINT": "https://example-resource.openai.azure.com",
    "AZURE_OPENAI_API_VERSION": "2024-06-01",
    "AZURE_OPENAI_DEPLOYMENT": "gpt4o-deploy",
    "OLLAMA_BASE_URL": "http://127.0.0.1:11434",
    "OPENROUTER_API_KEY": "sk-or-legacy-key-000000003",
    "LLM_PROVIDER": "anthropic",
    "LLM_MODEL": "claude-haiku-4-5",
}
ALL_VARS = list(LEGACY) + ["OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_ORGANIZATION",
                           "OPENAI_ORG_ID", "OPENAI_MODEL", "ANTHROPIC_BASE_URL",
                           "ANTHROPIC_MODEL", "OLLAMA_HOST", "OLLAMA_MODEL", "OPENROUTER_MODEL",
                           "AZURE_OPENAI_DEPLOYMENT_NAME", "OPENAI_API_VERSION",
                           "LLM_EMBEDDING_PROVIDER", "LLM_EMBEDDING_MODEL", "EMBEDDING_MODEL"]


@pytest.fixture
def legacy_env(monkeypatch):
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in LEGACY.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_env_connections", *args, stdout=out)
    return out.getvalue()


def test_import_creates_connections_and_system_defaults(legacy_env):
    text = run()
    conns = {c.name: c for c in Connection.objects.all()}
    assert set(conns) == {"openai-env", "anthropic-env", "azure-openai-env", "ollama-env",
                          "openrouter-env"}
    assert conns["openai-env"].secrets == {"api_key": CANARY}
    assert conns["anthropic-env"].default_model == "claude-haiku-4-5"
    azure = conns["azure-openai-env"]
    assert (azure.base_url, azure.config, azure.default_model) == (
        "https://example-resource.openai.azure.com", {"api_version": "2024-06-01"},
        "gpt4o-deploy")
    ollama = conns["ollama-env"]
    assert (ollama.auth_method, ollama.base_url) == ("none", "http://127.0.0.1:11434/v1")

    chat = SystemDefault.objects.get(role="chat")
    assert (chat.connection.name, chat.model) == ("anthropic-env", "claude-haiku-4-5")
    embedding = SystemDefault.objects.get(role="embedding")
    assert (embedding.connection.name, embedding.model) == ("openai-env", "text-embedding-3-small")

    assert "created connection openai-env" in text and "set system default chat" in text
    assert CANARY not in text and CANARY[-4:] in text  # a hint, never the key
    events = AuditEvent.objects.filter(action="connection.create")
    assert events.count() == 5 and {e.auth_kind for e in events} == {"command"}


def test_second_run_changes_nothing_and_says_so(legacy_env):
    run()
    before = list(Connection.objects.order_by("name").values_list("name", "revision", "updated_at"))
    events = AuditEvent.objects.count()
    text = run()
    assert "Nothing changed" in text
    assert text.count("unchanged:") == 7  # five connections, two defaults
    assert list(Connection.objects.order_by("name").values_list(
        "name", "revision", "updated_at")) == before
    assert AuditEvent.objects.count() == events


def test_changed_variable_is_reported_and_applied_only_with_update(legacy_env):
    run()
    legacy_env.setenv("OPENAI_API_KEY", "sk-rotated-legacy-key-0009")
    text = run()
    assert "left as is: connection openai-env differs" in text and "credentials.api_key" in text
    assert Connection.objects.get(name="openai-env").secrets == {"api_key": CANARY}
    text = run("--update")
    assert "updated connection openai-env: credentials.api_key" in text
    assert Connection.objects.get(name="openai-env").secrets == {
        "api_key": "sk-rotated-legacy-key-0009"}


def test_existing_system_default_is_kept_without_update(legacy_env):
    run()
    legacy_env.setenv("LLM_PROVIDER", "openai")
    legacy_env.setenv("LLM_MODEL", "gpt-4o-mini")
    text = run()
    assert "left as is: system default chat is anthropic-env" in text
    assert SystemDefault.objects.get(role="chat").connection.name == "anthropic-env"


def test_no_variables_means_nothing_to_do(monkeypatch):
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    assert "nothing to do" in run()
    assert not Connection.objects.exists()


def test_invalid_value_is_reported_and_fails_the_command(legacy_env):
    legacy_env.setenv("OPENAI_BASE_URL", "ftp://nope")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_env_connections", stdout=out)
    assert "error: connection openai-env not imported" in out.getvalue()
    assert Connection.objects.filter(name="anthropic-env").exists()
