"""manage.py import_user_settings: per-user settings become personal connections and
defaults; masked keys are never stored; a second run changes nothing."""

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from connections.models import Connection
from workspaces.models import UserDefault

pytestmark = pytest.mark.django_db

DAVE_KEY = "sk-ant-dave-personal-000000009"


@pytest.fixture
def users(db):
    User = get_user_model()
    return [User.objects.create_user(name, password=f"pw-{name}-123456")
            for name in ("dave", "erin", "frank")]


def run(tmp_path, entries) -> str:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(entries))
    out = io.StringIO()
    call_command("import_user_settings", str(path), stdout=out)
    return out.getvalue()


ENTRIES = [
    {"username": "dave", "llm_model": "anthropic/claude-sonnet-4-5", "llm_api_key": DAVE_KEY,
     "llm_base_url": None},
    {"username": "erin", "llm_model": "openai/llama3", "llm_api_key": "",
     "llm_base_url": "http://127.0.0.1:11434/v1"},
    {"username": "frank", "llm_model": "gpt-4o", "llm_api_key": "**********",
     "llm_base_url": ""},
]


def _state():
    return (sorted((c.owner.username, c.name, c.provider, c.base_url, c.default_model,
                    dict(c.secrets)) for c in Connection.objects.select_related("owner")),
            sorted((d.user.username, d.role, d.connection.name, d.model)
                   for d in UserDefault.objects.select_related("user", "connection")))


def test_entries_become_personal_connections_and_defaults(tmp_path, users):
    text = run(tmp_path, ENTRIES)
    dave = Connection.objects.get(owner__username="dave")
    assert (dave.provider, dave.default_model, dave.secrets) == (
        "anthropic", "claude-sonnet-4-5", {"api_key": DAVE_KEY})
    erin = Connection.objects.get(owner__username="erin")
    assert (erin.provider, erin.auth_method, erin.base_url, erin.default_model) == (
        "openai_compatible", "none", "http://127.0.0.1:11434/v1", "llama3")
    # frank's key was a stored mask: nothing stored, nothing made up
    assert not Connection.objects.filter(owner__username="frank").exists()
    assert "skipped: user frank" in text
    defaults = {d.user.username: (d.connection.owner.username, d.model)
                for d in UserDefault.objects.select_related("user", "connection__owner")}
    assert defaults == {"dave": ("dave", "claude-sonnet-4-5"), "erin": ("erin", "llama3")}
    assert DAVE_KEY not in text
    assert not AuditEvent.objects.filter(extra__icontains=DAVE_KEY).exists()


def test_a_second_run_changes_nothing(tmp_path, users):
    run(tmp_path, ENTRIES)
    before, events = _state(), AuditEvent.objects.count()
    text = run(tmp_path, ENTRIES)
    assert "Nothing changed" in text
    assert _state() == before and AuditEvent.objects.count() == events


def test_a_masked_key_later_keeps_the_stored_one(tmp_path, users):
    run(tmp_path, ENTRIES[:1])
    run(tmp_path, [{**ENTRIES[0], "llm_api_key": "sk-ant-****0009"}])
    assert Connection.objects.get(owner__username="dave").secrets == {"api_key": DAVE_KEY}


def test_unknown_users_and_bad_files_are_reported(tmp_path, users):
    with pytest.raises(CommandError):
        run(tmp_path, [{"username": "nobody", "llm_model": "gpt-4o", "llm_api_key": "sk-x" * 5}])
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(CommandError):
        call_command("import_user_settings", str(path), stdout=io.StringIO())
