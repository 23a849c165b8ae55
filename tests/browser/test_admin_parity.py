"""Admin parity in a real browser (issue 18): an add-form test that becomes the saved status,
unsaved discovery filling the model field, the Status section after a test, system defaults,
budgets, fallbacks (and discovery) on the workspace page, staged rotation with a failing then a
working key, rollback, the index and a list that fits 1400 px.

Run with LLMCONN_SCREENSHOTS=1 to refresh docs/screenshots/ (shown in the README).
"""

from __future__ import annotations

import pytest

from connections.models import Connection
from connections.services import connection_create
from tests.browser.conftest import needs_browser
from tests.conftest import UPSTREAM_KEY
from workspaces.models import Budget, SystemDefault, WorkspaceBinding
from workspaces.services import workspace_create

pytestmark = [pytest.mark.browser, needs_browser, pytest.mark.django_db(transaction=True)]

NEW_KEY = "sk-upstream-rotated-key-0002"
WRONG_KEY = "sk-wrong-rotated-key-9999"


def datalist(page, list_id: str) -> list[str]:
    return page.driver.execute_script(
        f"return Array.from(document.getElementById('{list_id}').options).map(o => o.value);")


def test_add_form_discovers_tests_and_saves_with_the_tests_status(admin_browser, upstream):
    page = admin_browser
    page.open("/admin/connections/connection/add/?provider=openai_compatible")
    page.fill("name", "Fresh upstream")
    page.choose("auth_method", "api_key")
    page.fill("base_url", upstream.openai_url)
    page.fill("secret__api_key", UPSTREAM_KEY)

    # Discovery of the unsaved settings fills the model field's suggestions.
    page.click("#llmconn-discover-button")
    assert page.wait_status("#llmconn-discover-result") == "succeeded"
    assert "test-model-large" in datalist(page, "id_default_model_options")
    page.fill("default_model", "test-model-large")

    page.click("#llmconn-test-button")
    assert page.wait_status("#llmconn-test-result") == "succeeded"
    page.screenshot("connection-add-tested")
    page.submit_and_wait("input[name='_continue']")
    connection = Connection.objects.get(name="Fresh upstream")
    assert connection.status == "ok"  # the test above, not "Untested"
    assert page.text("#llmconn-status").startswith("OK")

    # On the change form, a test of the saved connection updates the Status section in place.
    upstream.set_mode(401)
    page.click("#llmconn-test-button")
    assert page.wait_status("#llmconn-test-result") == "failed"
    status = page.find("#llmconn-status")
    assert status.get_attribute("data-status") == "failed"
    assert "Failed · auth" in status.text and "last tested just now" in status.text
    connection.refresh_from_db()
    assert (connection.status, connection.last_error_class) == ("failed", "auth")


def test_staged_rotation_refuses_a_failing_key_promotes_a_working_one_and_rolls_back(
        admin_browser, upstream):
    page = admin_browser
    upstream.api_keys = {UPSTREAM_KEY, NEW_KEY}
    connection = connection_create(
        name="Rotating", provider="openai_compatible", auth_method="api_key",
        base_url=upstream.openai_url, default_model="test-model",
        credentials={"api_key": UPSTREAM_KEY})
    change = f"/admin/connections/connection/{connection.pk}/change/"
    page.open(change)
    assert not page.find_all("#llmconn-rollback-button")

    page.fill("rotate__api_key", WRONG_KEY)
    page.submit_and_wait("#llmconn-rotate-button")
    message = page.text("ul.messagelist")
    assert "New secret refused: the test failed (auth" in message
    assert "The current secret is kept" in message
    connection.refresh_from_db()
    assert connection.secrets == {"api_key": UPSTREAM_KEY}

    page.fill("rotate__api_key", NEW_KEY)
    page.submit_and_wait("#llmconn-rotate-button")
    assert "New secret tested OK" in page.text("ul.messagelist")
    connection.refresh_from_db()
    assert connection.secrets == {"api_key": NEW_KEY}
    assert NEW_KEY not in page.driver.page_source
    page.screenshot("connection-rotation")

    page.submit_and_wait("#llmconn-rollback-button")
    assert "Rolled back to the previous secret" in page.text("ul.messagelist")
    connection.refresh_from_db()
    assert connection.secrets == {"api_key": UPSTREAM_KEY}
    assert not page.find_all("#llmconn-rollback-button")


def test_system_default_and_budget_are_managed_in_the_admin(admin_browser, upstream):
    page = admin_browser
    connection = connection_create(
        name="Default upstream", provider="openai_compatible", auth_method="api_key",
        base_url=upstream.openai_url, default_model="test-model",
        credentials={"api_key": UPSTREAM_KEY})
    workspace_create(name="Research", slug="research")

    page.open("/admin/workspaces/systemdefault/add/")
    page.choose("role", "chat")
    page.choose("connection", str(connection.pk))
    page.fill("model", "test-model-large")
    page.submit_and_wait("input[name='_save']")
    default = SystemDefault.objects.get(role="chat")
    assert (default.connection_id, default.model) == (connection.pk, "test-model-large")
    assert "Default upstream" in page.text("#result_list")
    page.screenshot("system-defaults")

    page.open("/admin/workspaces/budget/add/")
    page.fill("name", "research monthly")
    page.choose("scope", "workspace")
    page.choose("workspace", "research")
    page.fill("limit", "25")
    page.submit_and_wait("input[name='_save']")
    budget = Budget.objects.get()
    assert (budget.scope, budget.workspace.slug, budget.limit) == ("workspace", "research", 25)
    row = page.text("#result_list tbody tr")
    assert "research monthly" in row and "(0%)" in row
    page.screenshot("budgets")


def test_fallbacks_and_discovery_on_the_workspace_page(admin_browser, upstream,
                                                       upstream_factory):
    page = admin_browser
    main = connection_create(name="Main", provider="openai_compatible", auth_method="api_key",
                             base_url=upstream.openai_url, default_model="test-model",
                             credentials={"api_key": UPSTREAM_KEY})
    backup = connection_create(name="Backup", provider="openai_compatible",
                               auth_method="api_key", base_url=upstream.openai_url,
                               default_model="test-model", credentials={"api_key": UPSTREAM_KEY})
    workspace = workspace_create(name="Team", slug="team",
                                 bindings={"chat": {"connection": str(main.pk)}})
    page.open(f"/admin/workspaces/workspace/{workspace.pk}/change/")
    # Members and API keys sit above the Save row.
    assert page.driver.execute_script(
        "const m = document.getElementById('members'), s = document.querySelector('.submit-row');"
        "return !!(m.compareDocumentPosition(s) & Node.DOCUMENT_POSITION_FOLLOWING);")

    # "Discover" asks the provider now and fills the model suggestions.
    upstream.models = ["test-model", "brand-new-model"]
    page.click("button.llmconn-discover[data-role='chat']")
    page.wait_for(lambda: page.find(".field-chat_model .llmconn-discover-note")
                  .get_attribute("data-status"))
    assert "brand-new-model" in datalist(page, "id_chat_model_options")
    page.fill("chat_model", "brand-new-model")
    page.fill("chat_fallbacks", "Backup | test-model")
    page.screenshot("workspace-fallbacks")
    page.submit_and_wait("input[name='_continue']")
    binding = WorkspaceBinding.objects.get(workspace=workspace, role="chat")
    assert binding.model == "brand-new-model"
    assert binding.fallbacks == [{"connection": str(backup.pk), "model": "test-model"}]
    assert page.find("[name='chat_fallbacks']").get_attribute("value") == "Backup | test-model"


def test_index_order_and_the_connection_list_fits_1400_px(admin_browser, upstream):
    page = admin_browser
    for i in range(3):
        connection_create(name=f"A rather long connection name {i}", provider="azure_openai",
                          auth_method="api_key", base_url="https://res.example.com",
                          config={"api_version": "2024-06-01"},
                          credentials={"api_key": "sk-azure-0123456789abcd"})
    page.open("/admin/")
    captions = [c.text.title() for c in page.find_all("#content-main .module caption")]
    assert captions[:4] == ["Connections", "Workspaces", "Usage", "Audit"], captions
    assert captions[-1] == "System"
    page.screenshot("admin-index")
    page.open("/admin/connections/connection/")
    assert page.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth;")
