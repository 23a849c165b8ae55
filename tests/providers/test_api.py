"""The read-only provider catalog API: /api/v1/providers/ and /api/v1/presets/."""

import pytest

from providers.base import all_presets, all_providers

pytestmark = pytest.mark.django_db


def test_provider_list_is_the_whole_catalog(user_client):
    response = user_client.get("/api/v1/providers/")
    assert response.status_code == 200
    assert [p["name"] for p in response.json()] == [p.name for p in all_providers()]


def test_provider_detail_describes_auth_methods_fields_and_capabilities(user_client):
    body = user_client.get("/api/v1/providers/azure_openai/").json()
    assert body["label"] == "Azure OpenAI"
    assert body["litellm_prefix"] == "azure"
    assert body["default_base_url"] is None
    assert body["base_url_required"] is True
    assert body["capabilities"] == ["chat", "embeddings"]
    methods = {m["name"]: m for m in body["auth_methods"]}
    assert set(methods) == {"api_key", "azure_ad_client_credentials"}
    api_key = methods["api_key"]["fields"][0]
    assert api_key == {"name": "api_key", "label": "API key", "required": True, "secret": True,
                       "default": None, "help_text": "", "kind": "text",
                       "destination": False}
    assert body["fields"][0]["name"] == "api_version"
    assert body["fields"][0]["default"] == "2024-10-21"


def test_unknown_provider_is_404_in_the_error_shape(user_client):
    response = user_client.get("/api/v1/providers/nope/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "nope" in response.json()["error"]["message"]


def test_presets_include_the_contract_minimum(user_client):
    response = user_client.get("/api/v1/presets/")
    assert response.status_code == 200
    names = {p["name"] for p in response.json()}
    assert {"ollama", "lmstudio", "vllm", "openrouter", "openai", "anthropic"} <= names
    assert len(response.json()) == len(all_presets())
    ollama = next(p for p in response.json() if p["name"] == "ollama")
    assert ollama["provider"] == "ollama"
    assert ollama["auth_method"] == "none"
    assert ollama["base_url"] == "http://localhost:11434/v1"


@pytest.mark.parametrize("path", ["/api/v1/providers/", "/api/v1/providers/openai/",
                                  "/api/v1/presets/"])
def test_catalog_needs_a_signed_in_user(api_client, path):
    response = api_client.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("path", ["/api/v1/providers/", "/api/v1/presets/"])
def test_catalog_is_read_only(staff_client, path):
    response = staff_client.post(path, {"name": "x"}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
