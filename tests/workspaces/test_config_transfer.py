"""export_connections / import_connections of the whole configuration: export, import into an
empty database, same `resolved` for every workspace; idempotent; --dry-run shows the diff."""

import io
import json

import pytest
from django.core.management import call_command

from connections.models import Connection
from connections.services import connection_create, connection_set_default, connection_update
from tests.conftest import CANARY
from workspaces import budgets, services
from workspaces.models import Budget, SystemDefault, Workspace, WorkspaceBinding
from workspaces.selectors import resolved_roles

pytestmark = pytest.mark.django_db

SECOND_KEY = "sk-second-provider-key-000000042"


@pytest.fixture
def install():
    openai = connection_create(
        name="prod-openai", provider="openai", default_model="gpt-4o-mini",
        credentials={"api_key": CANARY}, input_cost_per_million_tokens="0.15",
        output_cost_per_million_tokens="0.6", timeout_seconds=30,
        default_params={"temperature": 0.2})
    connection_set_default(connection=openai)
    backup = connection_create(
        name="backup", provider="openai_compatible", auth_method="api_key",
        base_url="https://llm.example.com/v1", default_model="big",
        credentials={"api_key": SECOND_KEY}, default_params={"max_tokens": 256})
    ollama = connection_create(name="local-ollama", provider="ollama", auth_method="none",
                               base_url="http://127.0.0.1:11434/v1", default_model="llama3")
    services.system_default_set(role="chat", connection=ollama, model="llama3")
    services.system_default_set(role="embedding", connection=openai,
                                model="text-embedding-3-small")
    research = services.workspace_create(name="Research", slug="research", bindings={
        "chat": {"connection": str(openai.pk), "model": "gpt-4o",
                 "fallbacks": [{"connection": str(backup.pk), "model": None}],
                 "default_params": {"max_tokens": 100, "stop": ["END"]}},
        "agent": {"provider": "openai", "model": "gpt-4.1"},
    })
    services.workspace_create(name="Plain", slug="plain")
    budgets.budget_create(scope="workspace", workspace=research, period="day", limit="5",
                           metric="cost", name="daily")
    budgets.budget_create(scope="connection", connection=backup, period="month",
                           limit="100000", metric="tokens")
    return openai, backup, ollama


def _resolved_everywhere() -> dict:
    return {ws.slug: resolved_roles(workspace=ws) for ws in Workspace.objects.order_by("slug")}


def _export(path) -> str:
    call_command("export_connections", "--output", str(path), stderr=io.StringIO())
    return path.read_text()


def _import(path, *args) -> str:
    out = io.StringIO()
    call_command("import_connections", str(path), *args, stdout=out)
    return out.getvalue()


def _wipe():
    Budget.objects.all().delete()
    WorkspaceBinding.objects.all().delete()
    Workspace.objects.all().delete()
    SystemDefault.objects.all().delete()
    Connection.objects.all().delete()


def test_export_then_import_into_an_empty_database_resolves_the_same(install, tmp_path):
    before = _resolved_everywhere()
    assert before["research"]["chat"]["default_params"] == {
        "temperature": 0.2, "max_tokens": 100, "stop": ["END"]}
    path = tmp_path / "config.json"
    text = _export(path)
    assert CANARY not in text and SECOND_KEY not in text
    data = json.loads(text)
    assert {w["slug"] for w in data["workspaces"]} == {"research", "plain"}
    assert len(data["budgets"]) == 2

    _wipe()
    report = _import(path)
    assert "prod-openai: api_key" in report and "backup: api_key" in report
    # The secrets are entered again (they never travel in the file), then it is the same.
    connection_update(connection=Connection.objects.get(name="prod-openai"),
                      credentials={"api_key": CANARY}, is_active=True)
    connection_update(connection=Connection.objects.get(name="backup"),
                      credentials={"api_key": SECOND_KEY}, is_active=True)
    after = _resolved_everywhere()
    for slug, roles in before.items():
        for role, resolved in roles.items():
            assert after[slug][role] == resolved, (slug, role)
    assert after == before
    assert Connection.objects.get(name="prod-openai").is_default
    assert {(b.scope, str(b.limit)) for b in Budget.objects.all()} == {
        ("workspace", "5.000000"), ("connection", "100000.000000")}


def test_importing_the_same_file_again_changes_nothing(install, tmp_path):
    path = tmp_path / "config.json"
    _export(path)
    text = _import(path)
    assert "Nothing changed." in text
    assert "Dry run: nothing would change." in _import(path, "--dry-run")


def test_a_dry_run_shows_the_diff_and_changes_nothing(install, tmp_path):
    path = tmp_path / "config.json"
    _export(path)
    openai, backup, _ = install
    services.workspace_update(workspace=Workspace.objects.get(slug="research"),
                              bindings={"chat": {"model": "other"}})
    connection_update(connection=backup, timeout_seconds=5)
    Workspace.objects.filter(slug="plain").delete()
    text = _import(path, "--dry-run")
    assert "updated: workspace research (bindings.chat)" in text
    assert "updated: backup (timeout_seconds)" in text
    assert "created: workspace plain" in text
    assert WorkspaceBinding.objects.get(workspace__slug="research", role="chat").model == "other"
    assert not Workspace.objects.filter(slug="plain").exists()
    assert Connection.objects.get(pk=backup.pk).timeout_seconds == 5
    _import(path)
    assert WorkspaceBinding.objects.get(workspace__slug="research", role="chat").model == "gpt-4o"
    assert Workspace.objects.filter(slug="plain").exists()
    assert Connection.objects.get(pk=backup.pk).timeout_seconds is None


def test_personal_connections_are_not_exported(install, tmp_path, plain_user):
    connection_create(name="mine", provider="ollama", auth_method="none",
                      base_url="http://127.0.0.1:11434/v1", owner=plain_user)
    data = json.loads(_export(tmp_path / "c.json"))
    assert "mine" not in {c["name"] for c in data["connections"]}
