"""#17's fields in the admin, in a real browser: a role bound to a provider's default connection
(its model suggestions and "Discover" use that default), binding default parameters refused
then saved, and another user's personal connection seen by staff (metadata, Deactivate).

Run with LLMCONN_SCREENSHOTS=1 to refresh docs/screenshots/.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from connections.models import Connection, DiscoveredModel
from connections.services import connection_create, connection_set_default
from tests.browser.conftest import needs_browser
from tests.conftest import UPSTREAM_KEY
from workspaces.models import WorkspaceBinding
from workspaces.services import workspace_create

pytestmark = [pytest.mark.browser, needs_browser, pytest.mark.django_db(transaction=True)]

PERSONAL_KEY = "sk-personal-browser-key-W4rp"


def datalist(page, list_id: str) -> list[str]:
    return page.driver.execute_script(
        f"return Array.from(document.getElementById('{list_id}').options).map(o => o.value);")


def test_provider_binding_and_default_params_on_the_workspace_page(admin_browser, upstream):
    page = admin_browser
    main = connection_create(name="Main", provider="openai_compatible", auth_method="api_key",
                             base_url=upstream.openai_url, default_model="test-model",
                             credentials={"api_key": UPSTREAM_KEY})
    connection_set_default(connection=main)
    DiscoveredModel.objects.create(connection=main, model_id="known-model",
                                   discovered_at=timezone.now())
    workspace = workspace_create(name="Team", slug="team")
    page.open(f"/admin/workspaces/workspace/{workspace.pk}/change/")

    # The provider's default connection is a choice; its models become the suggestions.
    page.choose("chat_connection", "provider:openai_compatible")
    page.wait_for(lambda: "known-model" in datalist(page, "id_chat_model_options"))
    # "Discover" asks the provider's default connection now.
    upstream.models = ["test-model", "brand-new-model"]
    page.click("button.llmconn-discover[data-role='chat']")
    note = ".field-chat_model .llmconn-discover-note"
    assert page.wait_for(lambda: page.find(note).get_attribute("data-status")) == "succeeded"
    assert "brand-new-model" in datalist(page, "id_chat_model_options")
    page.fill("chat_model", "brand-new-model")

    # A default parameter the service refuses is an error on the field; nothing is saved.
    page.fill("chat_default_params", '{"api_key": "sk-nope"}')
    page.submit_and_wait("input[name='_continue']")
    assert "api_key cannot be a default parameter" in page.text(
        ".field-chat_default_params .errorlist")
    assert not WorkspaceBinding.objects.filter(workspace=workspace).exists()

    page.choose("chat_connection", "provider:openai_compatible")  # kept; chosen again anyway
    page.fill("chat_default_params", '{"temperature": 0.2, "max_tokens": 256}')
    page.submit_and_wait("input[name='_continue']")
    page.screenshot("workspace-provider-binding-default-params")
    binding = WorkspaceBinding.objects.get(workspace=workspace, role="chat")
    assert (binding.connection_id, binding.provider, binding.model) == (
        None, "openai_compatible", "brand-new-model")
    assert binding.default_params == {"temperature": 0.2, "max_tokens": 256}
    resolved = page.text("#llmconn-resolved tr[data-role='chat']")
    assert "Main" in resolved and "brand-new-model" in resolved
    assert "the provider's default" in resolved and '"temperature": 0.2' in resolved


def test_staff_see_a_personal_connection_as_metadata_and_deactivate_it(admin_browser, upstream):
    page = admin_browser
    owner = get_user_model().objects.create_user("alice", "a@example.com", "pw-alice-1234")
    personal = connection_create(
        name="Alice's server", provider="openai_compatible", auth_method="api_key",
        base_url=upstream.openai_url, default_model="test-model", owner=owner,
        credentials={"api_key": PERSONAL_KEY}, default_params={"temperature": 0.33})
    page.open(f"/admin/connections/connection/{personal.pk}/change/")
    body = page.text("#content")
    assert "personal connection of another user" in body and "alice" in body
    assert "W4rp" not in page.driver.page_source and "0.33" not in page.driver.page_source
    assert not page.find_all("input[type=password]")
    page.screenshot("personal-connection-staff-view")
    page.submit_and_wait("input[name='deactivate']")
    assert "is deactivated" in page.text("ul.messagelist")
    personal.refresh_from_db()
    assert personal.is_active is False
    assert Connection.objects.filter(pk=personal.pk).exists()
