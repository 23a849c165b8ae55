"""The connections admin (Django test client): catalog-driven forms, secrets never in the HTML,
service rules as form errors (never a 500), delete refusal, move bindings, list actions."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from audit.models import AuditEvent
from connections.models import Connection
from connections.services import connection_create
from providers.base import all_presets, all_providers, get_provider
from tests.conftest import CANARY, UPSTREAM_KEY
from tests.factories import ConnectionFactory
from workspaces.models import WorkspaceBinding
from workspaces.services import system_default_set, workspace_create

pytestmark = pytest.mark.django_db

ADD = "/admin/connections/connection/add/"
LIST = "/admin/connections/connection/"


def change_url(connection) -> str:
    return f"/admin/connections/connection/{connection.pk}/change/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def form_data(**overrides) -> dict:
    data = {"name": "Team server", "auth_method": "api_key", "base_url": "http://127.0.0.1:9/v1",
            "default_model": "test-model", "is_active": "on"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def make(**kwargs) -> Connection:
    kwargs.setdefault("name", "Team server")
    kwargs.setdefault("provider", "openai_compatible")
    kwargs.setdefault("auth_method", "api_key")
    kwargs.setdefault("base_url", "http://127.0.0.1:9/v1")
    kwargs.setdefault("default_model", "test-model")
    kwargs.setdefault("credentials", {"api_key": CANARY})
    return connection_create(**kwargs)


# --- add: provider or preset first ------------------------------------------------------------

def test_add_without_a_provider_shows_every_catalog_provider_and_preset_as_a_card(admin_client):
    html = admin_client.get(ADD).content.decode()
    for spec in all_providers():
        assert f'data-card="provider-{spec.name}"' in html
        assert f"{ADD}?provider={spec.name}" in html
    for preset in all_presets():
        assert f'data-card="preset-{preset.name}"' in html
    assert "<form" not in html.split('id="content-main"')[1]  # no form before a choice


def test_unknown_provider_shows_the_cards_again_with_an_error(admin_client):
    response = admin_client.get(ADD + "?provider=nope")
    assert response.status_code == 200
    assert "Unknown provider or preset" in response.content.decode()
    assert admin_client.post(ADD + "?preset=nope", form_data()).status_code == 200
    assert not Connection.objects.exists()


@pytest.mark.parametrize("provider", ["azure_openai", "bedrock", "openai_compatible", "ollama"])
def test_add_form_has_exactly_the_providers_fields(admin_client, provider):
    spec = get_provider(provider)
    form = admin_client.get(f"{ADD}?provider={provider}").context["adminform"].form
    expected = {"name", "auth_method", "base_url", "default_model", "is_active",
                "input_cost_per_million_tokens", "output_cost_per_million_tokens",
                "timeout_seconds", "default_params", "extra_headers", "ca_cert", "llmconn_test_id"}
    for field in spec.fields:
        expected.add(("secret__" if field.secret else "cfg__") + field.name)
    for method in spec.auth_methods:
        for field in method.fields:
            expected.add(("secret__" if field.secret else "cfg__") + field.name)
    assert set(form.fields) == expected
    assert [c for c, _ in form.fields["auth_method"].choices] == [m.name for m in spec.auth_methods]
    for name, field in form.fields.items():
        if name.startswith("secret__"):
            assert field.widget.input_type == "password"
            assert field.widget.render_value is False


def test_preset_fills_the_form_and_the_connection_is_created_from_it(admin_client):
    response = admin_client.get(ADD + "?preset=openrouter")
    initial = response.context["adminform"].form.initial
    assert initial["name"] == "OpenRouter" and initial["default_model"] == "openai/gpt-4o-mini"
    response = admin_client.post(ADD + "?preset=openrouter", form_data(
        name="Router", base_url="", default_model="openai/gpt-4o-mini",
        secret__api_key="sk-or-0123456789abcdef"))
    assert response.status_code == 302, response.content.decode()[:3000]
    connection = Connection.objects.get(name="Router")
    assert connection.provider == "openrouter"
    assert connection.secrets == {"api_key": "sk-or-0123456789abcdef"}
    assert AuditEvent.objects.filter(action="connection.create",
                                     target_id=str(connection.pk)).count() == 1


def test_only_the_chosen_auth_methods_fields_are_saved(admin_client):
    response = admin_client.post(ADD + "?provider=openai_compatible", form_data(
        auth_method="custom_header", cfg__header_name="X-Team-Key",
        secret__header_value="team-secret-value-123", secret__api_key="sk-ignored-0000000000",
        cfg__client_id="ignored"))
    assert response.status_code == 302, response.content.decode()[:3000]
    connection = Connection.objects.get(name="Team server")
    assert connection.config == {"header_name": "X-Team-Key"}
    assert connection.secrets == {"header_value": "team-secret-value-123"}


def test_a_required_secret_left_empty_on_add_is_a_field_error(admin_client):
    response = admin_client.post(ADD + "?provider=openai_compatible", form_data())
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["secret__api_key"] == ["This field is required."]
    assert not Connection.objects.exists()


# --- secrets ------------------------------------------------------------------------------------

def test_secret_plaintext_never_reaches_any_admin_page(admin_client):
    connection = make()
    workspace = workspace_create(name="Research", bindings={"chat": {"connection": str(connection.pk)}})
    pages = [LIST, change_url(connection), f"{LIST}{connection.pk}/delete/",
             f"{LIST}{connection.pk}/move-bindings/", "/admin/audit/auditevent/",
             f"/admin/workspaces/workspace/{workspace.pk}/change/", LIST + "?q=Team"]
    for url in pages:
        response = admin_client.get(url, follow=True)
        assert response.status_code == 200, url
        assert CANARY not in response.content.decode(), url
    # A form sent back with an error does not echo the secret typed into it.
    response = admin_client.post(ADD + "?provider=openai_compatible",
                                 form_data(name="Other", base_url="ftp://x", secret__api_key=CANARY))
    assert response.status_code == 200
    assert "Base URL must start with http" in response.content.decode()
    assert CANARY not in response.content.decode()


def test_change_form_says_which_secret_is_saved_and_a_blank_input_keeps_it(admin_client):
    connection = make()
    html = admin_client.get(change_url(connection)).content.decode()
    assert f"Saved, ends in {CANARY[-4:]}; leave blank to keep." in html
    response = admin_client.post(change_url(connection), form_data(default_model="other-model"))
    assert response.status_code == 302, response.content.decode()[:3000]
    connection.refresh_from_db()
    assert connection.default_model == "other-model"
    assert connection.secrets == {"api_key": CANARY}
    event = AuditEvent.objects.filter(action="connection.update").get()
    assert event.changed_fields == ["default_model"]


def test_gateway_prices_and_timeout_are_saved_and_checked(admin_client):
    connection = make()
    response = admin_client.post(change_url(connection), form_data(
        input_cost_per_million_tokens="0.5", output_cost_per_million_tokens="1.25",
        timeout_seconds="30"))
    assert response.status_code == 302, response.content.decode()[:3000]
    connection.refresh_from_db()
    assert (str(connection.input_cost_per_million_tokens), connection.timeout_seconds) == ("0.500000", 30)
    response = admin_client.post(change_url(connection), form_data(timeout_seconds="0"))
    assert response.context["adminform"].form.errors["timeout_seconds"]


def test_a_new_secret_replaces_the_stored_one(admin_client):
    connection = make()
    admin_client.post(change_url(connection), form_data(secret__api_key="sk-new-key-0123456789"))
    connection.refresh_from_db()
    assert connection.secrets == {"api_key": "sk-new-key-0123456789"}


@pytest.mark.parametrize("masked", ["********", "sk-••••••••", f"…{CANARY[-4:]}"])
def test_a_masked_looking_secret_is_a_field_error_and_nothing_is_stored(admin_client, masked):
    connection = make()
    response = admin_client.post(change_url(connection), form_data(secret__api_key=masked))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Looks masked; nothing was stored." in errors["secret__api_key"]
    connection.refresh_from_db()
    assert connection.secrets == {"api_key": CANARY}


def test_a_new_host_without_the_key_again_is_a_field_error(admin_client):
    connection = make()
    response = admin_client.post(change_url(connection),
                                 form_data(base_url="http://127.0.0.2:9/v1"))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["secret__api_key"] == ["Send again: api_key."]
    assert "endpoint changed" in " ".join(form.non_field_errors())
    connection.refresh_from_db()
    assert connection.base_url == "http://127.0.0.1:9/v1"


def test_a_duplicate_name_is_a_field_error_not_a_500(admin_client):
    make(name="Taken")
    response = admin_client.post(ADD + "?provider=openai_compatible",
                                 form_data(name="Taken", secret__api_key="sk-another-0123456789"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"]
    assert Connection.objects.count() == 1


# --- the list -----------------------------------------------------------------------------------

def test_list_shows_badges_counts_and_default_in_constant_queries(admin_client,
                                                                  django_assert_max_num_queries):
    conn = make(name="Main")
    workspace_create(name="W1", bindings={"chat": {"connection": str(conn.pk)}})
    system_default_set(role="agent", connection=conn)
    Connection.objects.filter(pk=conn.pk).update(status="failed", last_error_class="auth",
                                                 is_default=True)
    with django_assert_max_num_queries(30) as few:
        admin_client.get(LIST)
    ConnectionFactory.create_batch(25)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(LIST)
    html = response.content.decode()
    assert "Failed · auth" in html and "★ default" in html
    row = next(r for r in response.context["cl"].result_list if r.name == "Main")
    assert (row.used_by_count, row.models_count) == (2, 0)


def test_list_filters_by_provider_status_and_active_and_searches_by_name(admin_client):
    make(name="Alpha")
    make(name="Beta", provider="ollama", auth_method="none", credentials={})
    Connection.objects.filter(name="Beta").update(is_active=False, status="ok")

    def names(query):
        return sorted(c.name for c in admin_client.get(LIST + query).context["cl"].result_list)

    assert names("?provider=ollama") == ["Beta"]
    assert names("?status__exact=ok") == ["Beta"]
    assert names("?active=yes") == ["Alpha"]
    assert names("?q=alp") == ["Alpha"]


@pytest.mark.django_db(transaction=True)  # tasks are queued on commit (eager Celery)
def test_test_selected_action_runs_the_service_and_reports_results(admin_client, upstream,
                                                                   closed_port_url):
    good = make(name="Good", base_url=upstream.openai_url, credentials={"api_key": UPSTREAM_KEY})
    bad = make(name="Down", base_url=closed_port_url)
    response = admin_client.post(LIST, {"action": "test_selected",
                                        "_selected_action": [str(good.pk), str(bad.pk)]},
                                 follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert "Tested 2 connection(s): 1 succeeded, 1 failed" in text
    assert "Down (unreachable" in text
    good.refresh_from_db(), bad.refresh_from_db()
    assert (good.status, bad.status, bad.last_error_class) == ("ok", "failed", "unreachable")


@pytest.mark.django_db(transaction=True)
def test_discover_action_stores_models(admin_client, upstream):
    conn = make(base_url=upstream.openai_url, credentials={"api_key": UPSTREAM_KEY})
    admin_client.post(LIST, {"action": "discover_models", "_selected_action": [str(conn.pk)]})
    assert conn.discovered_models.filter(model_id="test-model-large").exists()


def test_set_default_action_needs_exactly_one_and_refuses_inactive(admin_client):
    one, two = make(name="One"), make(name="Two")
    response = admin_client.post(LIST, {"action": "make_default",
                                        "_selected_action": [str(one.pk), str(two.pk)]}, follow=True)
    assert "Choose exactly one" in response.content.decode()
    Connection.objects.filter(pk=two.pk).update(is_active=False)
    response = admin_client.post(LIST, {"action": "make_default",
                                        "_selected_action": [str(two.pk)]}, follow=True)
    assert "An inactive connection cannot be the default" in response.content.decode()
    admin_client.post(LIST, {"action": "make_default", "_selected_action": [str(one.pk)]})
    assert list(Connection.objects.filter(is_default=True).values_list("name", flat=True)) == ["One"]


# --- delete and move bindings -------------------------------------------------------------------

def test_delete_of_a_bound_connection_lists_its_users_and_is_refused(admin_client):
    conn = make()
    ws = workspace_create(name="Research", bindings={"embedding": {"connection": str(conn.pk)}})
    system_default_set(role="chat", connection=conn)
    url = f"{LIST}{conn.pk}/delete/"
    page = admin_client.get(url)
    html = page.content.decode()
    assert page.context["dependents"][0]["workspace_name"] == "Research"
    assert "embedding" in html and "System default" in html
    # Each user links to its admin page (the workspaces app answers: connections.dependents).
    assert f'href="/admin/workspaces/workspace/{ws.pk}/change/"' in html
    assert 'href="/admin/workspaces/systemdefault/"' in html
    assert 'name="post"' not in html  # no confirm button
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 409  # the service's Conflict
    assert "is used by 2 workspace binding(s)" in response.content.decode()
    assert Connection.objects.filter(pk=conn.pk).exists()


def test_delete_of_an_unused_connection_goes_through_the_service(admin_client):
    conn = make()
    response = admin_client.post(f"{LIST}{conn.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Connection.objects.exists()
    assert AuditEvent.objects.filter(action="connection.delete", target_id=str(conn.pk)).count() == 1


def test_delete_selected_refuses_bound_connections(admin_client):
    bound, free = make(name="Bound"), make(name="Free")
    workspace_create(name="Research", bindings={"chat": {"connection": str(bound.pk)}})
    response = admin_client.post(LIST, {"action": "delete_selected", "post": "yes",
                                        "_selected_action": [str(bound.pk), str(free.pk)]})
    assert "Bound: used by workspace “Research” as chat" in response.content.decode()
    assert Connection.objects.count() == 2  # refused as a whole, like Django's protected objects
    admin_client.post(LIST, {"action": "delete_selected", "post": "yes",
                             "_selected_action": [str(free.pk)]})
    assert list(Connection.objects.values_list("name", flat=True)) == ["Bound"]


def test_move_bindings_page_moves_every_binding_through_the_service(admin_client):
    source, target = make(name="Old"), make(name="New")
    ws = workspace_create(name="Research", bindings={"chat": {"connection": str(source.pk)},
                                                     "agent": {"connection": str(source.pk)}})
    url = f"{LIST}{source.pk}/move-bindings/"
    assert [t["name"] for t in admin_client.get(url).context["targets"]] == ["New"]
    response = admin_client.post(url, {"to": str(target.pk)})
    assert response.status_code == 302
    assert set(WorkspaceBinding.objects.filter(workspace=ws).values_list("connection__name", flat=True)) == {"New"}
    assert AuditEvent.objects.filter(action="connection.move_bindings").count() == 1


def test_move_bindings_refusals_are_shown_on_the_page(admin_client):
    source = make(name="Old")
    chat_only = make(name="Anthropic", provider="anthropic", base_url=None)
    workspace_create(name="Research", bindings={"embedding": {"connection": str(source.pk)}})
    url = f"{LIST}{source.pk}/move-bindings/"
    response = admin_client.post(url, {"to": str(chat_only.pk)})
    assert response.status_code == 400
    assert "cannot serve the role(s) embedding" in response.content.decode()
    assert admin_client.post(url, {"to": "not-a-uuid"}).status_code == 400


def test_history_button_opens_the_connections_audit_events(admin_client):
    conn = make()
    response = admin_client.get(f"{LIST}{conn.pk}/history/")
    assert response.status_code == 302
    assert response["Location"] == (reverse("admin:audit_auditevent_changelist")
                                    + f"?target_type=connection&target_id={conn.pk}")


def test_unreadable_secrets_ask_to_be_entered_again_and_the_page_still_works(admin_client):
    with override_settings(FERNET_KEYS=["a-key-that-is-gone"]):
        conn = make(name="Orphan")
    html = admin_client.get(change_url(conn)).content.decode()
    assert "cannot be decrypted" in html
    response = admin_client.post(change_url(conn), form_data(name="Orphan"))
    assert response.context["adminform"].form.errors["secret__api_key"] == ["This field is required."]
    response = admin_client.post(change_url(conn), form_data(name="Orphan",
                                                            secret__api_key="sk-again-0123456789"))
    assert response.status_code == 302
    assert Connection.objects.get(pk=conn.pk).secrets == {"api_key": "sk-again-0123456789"}


def test_a_provider_gone_from_the_catalog_is_explained_not_a_500(admin_client):
    conn = ConnectionFactory(provider="retired_provider")
    response = admin_client.get(change_url(conn), follow=True)
    assert "no longer in the catalog" in response.content.decode()
    assert admin_client.get(LIST).status_code == 200
    assert admin_client.get(f"{LIST}{conn.pk}/delete/").status_code == 200


def test_admin_pages_need_staff(client, plain_user):
    client.force_login(plain_user)
    response = client.get(LIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
