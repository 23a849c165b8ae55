"""The management UI in a real browser: connections from a preset, inline tests (green, red),
blank secrets kept, a bound connection that cannot be deleted, bindings with a discovered model.

Run with LLMCONN_SCREENSHOTS=1 to refresh docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import pytest

from connections.models import Connection
from connections.services import connection_create
from tests.browser.conftest import needs_browser
from tests.conftest import CANARY, UPSTREAM_KEY
from workspaces.models import WorkspaceBinding
from workspaces.services import workspace_create

pytestmark = [pytest.mark.browser, needs_browser, pytest.mark.django_db(transaction=True)]

WRONG_KEY = "sk-wrong-key-for-the-test-9999"


def test_connection_from_preset_tests_green_red_and_keeps_a_blank_key(
        admin_browser, upstream, closed_port_url):
    page = admin_browser
    # Two neighbours so that the list shows every badge.
    connection_create(name="Laptop Ollama", provider="ollama", auth_method="none",
                      base_url=closed_port_url, default_model="llama3.2")
    connection_create(name="Staging OpenAI", provider="openai", auth_method="api_key",
                      base_url=upstream.openai_url, default_model="gpt-4o-mini",
                      credentials={"api_key": CANARY})

    # Step 1: provider and preset cards from the catalog.
    page.open("/admin/connections/connection/add/")
    page.wait_visible("[data-card='preset-vllm']")
    assert page.find_all("[data-card='provider-openai_compatible']")
    page.screenshot("add-provider-cards")
    page.submit_and_wait("[data-card='preset-vllm']")

    # Step 2: the vLLM preset's form; choosing "API key" shows the key input only.
    assert "preset=vllm" in page.driver.current_url
    assert not page.find(".field-secret__api_key").is_displayed()  # preset: no auth
    page.fill("name", "Team vLLM")
    page.fill("base_url", upstream.openai_url)
    page.fill("default_model", "test-model")
    page.choose("auth_method", "api_key")
    page.wait_visible(".field-secret__api_key")
    assert not page.find(".field-secret__header_value").is_displayed()

    # Tested before saving: a wrong key is red with error class "auth"...
    page.fill("secret__api_key", WRONG_KEY)
    page.click("#llmconn-test-button")
    assert page.wait_status("#llmconn-test-result") == "failed"
    result = page.find("#llmconn-test-result")
    assert result.get_attribute("data-error-class") == "auth"
    assert "Failed · auth" in result.text
    assert Connection.objects.filter(name="Team vLLM").count() == 0  # nothing saved

    # ...the right key is green, with the latency.
    page.fill("secret__api_key", UPSTREAM_KEY)
    page.click("#llmconn-test-button")
    assert page.wait_status("#llmconn-test-result") == "succeeded"
    assert " ms" in page.text("#llmconn-test-result")
    page.submit_and_wait("input[name='_continue']")

    connection = Connection.objects.get(name="Team vLLM")
    assert (connection.provider, connection.auth_method) == ("vllm", "api_key")
    assert connection.secrets == {"api_key": UPSTREAM_KEY}

    # Editing: the key input is empty and says which key is saved; blank keeps it.
    key_input = page.find("[name='secret__api_key']")
    assert key_input.get_attribute("value") == ""
    assert "Saved, ends in 0001; leave blank to keep." in page.text(".field-secret__api_key")
    assert UPSTREAM_KEY not in page.driver.page_source
    page.fill("default_model", "test-model-large")
    page.submit_and_wait("input[name='_continue']")
    connection.refresh_from_db()
    assert connection.default_model == "test-model-large"
    assert connection.secrets == {"api_key": UPSTREAM_KEY}

    # The next test is still green: the unchanged form tests the saved connection (its
    # status badge turns OK)...
    page.click("#llmconn-test-button")
    assert page.wait_status("#llmconn-test-result") == "succeeded"
    result = page.find("#llmconn-test-result")
    assert result.get_attribute("data-mode") == "saved"
    assert "test-model-large" in result.text
    assert page.text(".field-status_display .llmconn-badge") == "OK"
    connection.refresh_from_db()
    assert connection.status == "ok"
    page.screenshot("connection-change-test-result")
    # ...and an edited, unsaved form is tested with the saved key filling the blank input.
    page.fill("default_model", "test-model")
    page.click("#llmconn-test-button")
    assert page.wait_status("#llmconn-test-result") == "succeeded"
    assert page.find("#llmconn-test-result").get_attribute("data-mode") == "unsaved"
    assert "model test-model" in page.text("#llmconn-test-result")

    # The list: test every connection with the admin action; badges show the outcomes.
    page.open("/admin/connections/connection/")
    page.click("#action-toggle")
    page.choose("action", "test_selected")
    page.submit_and_wait("button[name='index']")
    assert "Tested 3 connection(s): 1 succeeded, 2 failed" in page.text("ul.messagelist")
    rows = {r.find_element("css selector", "th").text: r.text for r in page.find_all("#result_list tbody tr")}
    assert "Failed · unreachable" in rows["Laptop Ollama"]
    assert "Failed · auth" in rows["Staging OpenAI"]  # the fake upstream does not know the key
    assert "OK" in rows["Team vLLM"]
    # Discover models of all three: the Models column counts them.
    page.click("#action-toggle")
    page.choose("action", "discover_models")
    page.submit_and_wait("button[name='index']")
    assert ("Discovered the models of 3 connection(s): 1 succeeded, 2 failed"
            in page.text("ul.messagelist"))
    row = page.find("#result_list tbody tr:nth-child(3)")
    assert row.find_element("css selector", "td.field-models_count").text == "6"
    page.screenshot("connection-list")
    assert CANARY not in page.driver.page_source


def test_bound_connection_cannot_be_deleted_and_a_binding_picks_a_discovered_model(
        admin_browser, upstream):
    page = admin_browser
    connection = connection_create(
        name="Shared upstream", provider="openai_compatible", auth_method="api_key",
        base_url=upstream.openai_url, default_model="test-model",
        credentials={"api_key": UPSTREAM_KEY})
    workspace = workspace_create(name="Research", slug="research")

    # Discover the connection's models from its page.
    page.open(f"/admin/connections/connection/{connection.pk}/change/")
    page.click("#llmconn-discover-button")
    assert page.wait_status("#llmconn-discover-result") == "succeeded"
    assert "test-model-large" in page.text("#llmconn-models-list")

    # Bind the chat role: the model input suggests the discovered models.
    page.open(f"/admin/workspaces/workspace/{workspace.pk}/change/")
    page.choose("chat_connection", str(connection.pk))
    suggestions = page.driver.execute_script(
        "return Array.from(document.getElementById('id_chat_model_options').options)"
        ".map(o => o.value);")
    assert "test-model-large" in suggestions and "test-embedding" in suggestions
    page.fill("chat_model", "test-model-large")
    page.submit_and_wait("input[name='_continue']")
    binding = WorkspaceBinding.objects.get(workspace=workspace, role="chat")
    assert (binding.connection_id, binding.model) == (connection.pk, "test-model-large")
    assert "test-model-large" in page.text("#llmconn-resolved tr[data-role='chat']")

    # An API key is shown once; the workspace page then shows only its prefix.
    page.find("#llmconn-key-name").send_keys("notebook")
    page.submit_and_wait("#api-keys button[type=submit]")
    raw = page.find("#llmconn-new-key").get_attribute("value")
    assert raw.startswith("lck_")
    page.submit_and_wait(".llmconn-key-box ~ p a.button")
    assert raw not in page.driver.page_source
    assert raw[:12] in page.text("#llmconn-api-keys")
    page.screenshot("workspace-bindings")

    # Deleting the bound connection is refused, naming the workspace and role.
    page.open(f"/admin/connections/connection/{connection.pk}/delete/")
    refusal = page.wait_visible("#llmconn-delete-refused")
    assert "Research" in refusal.text and "chat" in refusal.text
    assert not page.find_all("#content-main input[type=submit]")
    assert Connection.objects.filter(pk=connection.pk).exists()
    page.screenshot("delete-refused")

    # Make it its provider's default (list action), then read its History: the audit events.
    page.open("/admin/connections/connection/")
    page.click(f"input[name='_selected_action'][value='{connection.pk}']")
    page.choose("action", "make_default")
    page.submit_and_wait("button[name='index']")
    assert "is now the default OpenAI-compatible server connection" in page.text("ul.messagelist")
    page.open(f"/admin/connections/connection/{connection.pk}/change/")
    page.submit_and_wait("a.historylink")
    assert "History of connection “Shared upstream”" in page.text("#content h1")
    events = page.text("#result_list")
    assert "connection.create" in events and "connection.set_default" in events
    assert "workspace.update" not in events
    page.open("/admin/audit/auditevent/")
    assert "workspace.api_key_create" in page.text("#result_list")
    page.screenshot("audit-list")
