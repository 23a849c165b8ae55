"""export_connections / import_connections: JSON without secrets, fingerprints in their place."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from audit.services import secret_fingerprint
from connections.models import Connection
from connections.services import connection_create, connection_set_default
from tests.conftest import CANARY
from workspaces.models import SystemDefault
from workspaces.services import system_default_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def install():
    openai = connection_create(name="prod-openai", provider="openai", default_model="gpt-4o-mini",
                               credentials={"api_key": CANARY}, config={"organization": "org-1"})
    connection_set_default(connection=openai)
    ollama = connection_create(name="local-ollama", provider="ollama", auth_method="none",
                               base_url="http://127.0.0.1:11434/v1", default_model="llama3")
    system_default_set(role="chat", connection=ollama, model="llama3")
    system_default_set(role="embedding", connection=openai, model="text-embedding-3-small")
    return openai, ollama


def export() -> str:
    out = io.StringIO()
    call_command("export_connections", stdout=out)
    return out.getvalue()


def test_export_has_settings_and_fingerprints_but_no_secret(install):
    text = export()
    assert CANARY not in text
    data = json.loads(text)
    rows = {r["name"]: r for r in data["connections"]}
    assert rows["prod-openai"]["credentials"] == {
        "api_key": {"fingerprint": secret_fingerprint(CANARY), "hint": CANARY[-4:]}}
    assert rows["prod-openai"]["config"] == {"organization": "org-1"}
    assert rows["prod-openai"]["is_default"] is True
    assert rows["local-ollama"]["credentials"] == {}
    assert {(d["role"], d["connection"]) for d in data["system_defaults"]} == {
        ("chat", "local-ollama"), ("embedding", "prod-openai")}


def test_import_into_an_empty_install_reports_the_secrets_to_enter(install, tmp_path):
    path = tmp_path / "export.json"
    path.write_text(export())
    SystemDefault.objects.all().delete()
    Connection.objects.all().delete()

    out = io.StringIO()
    call_command("import_connections", str(path), stdout=out)
    text = out.getvalue()
    assert "Connections whose secrets must be entered" in text
    assert "  prod-openai: api_key" in text
    openai = Connection.objects.get(name="prod-openai")
    assert openai.is_active is False and openai.secrets == {}
    assert openai.config == {"organization": "org-1"}
    ollama = Connection.objects.get(name="local-ollama")
    assert ollama.is_active is True
    assert SystemDefault.objects.get(role="chat").connection == ollama
    # The default points at the connection waiting for its secrets (works once entered).
    assert "set: system default embedding -> prod-openai" in text
    assert SystemDefault.objects.get(role="embedding").connection == openai

    # Entering the secret later makes it usable.
    from connections.services import connection_update

    connection_update(connection=openai, credentials={"api_key": CANARY}, is_active=True)
    assert Connection.objects.get(name="prod-openai").secrets == {"api_key": CANARY}


def test_import_over_the_same_install_changes_nothing(install, tmp_path):
    path = tmp_path / "export.json"
    path.write_text(export())
    before = list(Connection.objects.order_by("name").values_list("name", "revision"))
    out = io.StringIO()
    call_command("import_connections", str(path), stdout=out)
    text = out.getvalue()
    assert "exists: prod-openai (matches; same secrets); left unchanged" in text
    assert "Nothing changed." in text
    assert list(Connection.objects.order_by("name").values_list("name", "revision")) == before


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"format": "other"}', "Not an llmconn export"),
    ('{"format": "llmconn-connections", "version": 99, "connections": []}', "Unsupported"),
])
def test_bad_files_are_refused_clearly(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("import_connections", str(path), stdout=io.StringIO())


def test_bad_entries_are_reported_and_the_rest_imported(tmp_path):
    data = {"format": "llmconn-connections", "version": 1, "connections": [
        {"name": "ok", "provider": "ollama", "auth_method": "none", "base_url": None,
         "default_model": "", "config": {}, "is_active": True},
        {"name": "bad-url", "provider": "ollama", "auth_method": "none", "base_url": 12},
        {"name": "bad-provider", "provider": "nope", "auth_method": "api_key"},
        "garbage",
    ], "system_defaults": []}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(data))
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_connections", str(path), stdout=out)
    assert Connection.objects.filter(name="ok").exists()
    assert "error: bad-url not imported" in out.getvalue()
    assert "error: bad-provider not imported" in out.getvalue()
