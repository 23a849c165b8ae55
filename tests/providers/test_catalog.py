"""The provider catalog: one source of truth that validation, API and admin read."""

import pytest
from django.core.exceptions import ValidationError

from providers.base import all_presets, all_providers, get_preset, get_provider
from providers.validation import validate_connection_settings

REQUIRED_PROVIDERS = {
    "openai", "azure_openai", "anthropic", "gemini", "vertex_ai", "bedrock", "mistral", "groq",
    "together_ai", "deepseek", "openrouter", "ollama", "lmstudio", "vllm", "litellm_proxy",
    "openai_compatible",
}


def test_catalog_has_every_required_provider():
    assert REQUIRED_PROVIDERS <= {p.name for p in all_providers()}


def test_catalog_has_required_presets_pointing_at_registered_providers():
    names = {p.name for p in all_presets()}
    assert {"ollama", "lmstudio", "vllm", "openrouter", "openai", "anthropic"} <= names
    for preset in all_presets():
        data = preset.as_dict()
        provider = get_provider(data["provider"])
        assert provider.auth_method(data["auth_method"]) is not None


def test_every_provider_describes_itself_completely():
    for provider in all_providers():
        data = provider.as_dict()
        assert data["label"] and data["litellm_prefix"]
        assert data["auth_methods"], provider.name
        assert set(data["capabilities"]) <= {"chat", "embeddings"} and data["capabilities"]
        for method in data["auth_methods"]:
            for field in method["fields"]:
                assert set(field) >= {"name", "label", "required", "secret", "default"}
        if not data["default_base_url"]:
            assert data["base_url_required"] or provider.name in {"vertex_ai", "bedrock"}


def test_secret_fields_are_marked_secret():
    assert get_provider("openai").secret_field_names("api_key") == ("api_key",)
    assert get_provider("openai_compatible").secret_field_names("custom_header") == ("header_value",)
    assert get_provider("openai_compatible").secret_field_names(
        "oauth_client_credentials") == ("client_secret",)
    assert get_provider("ollama").secret_field_names("none") == ()


def test_ollama_preset_needs_no_key():
    assert get_preset("ollama").as_dict()["auth_method"] == "none"


def _errors(**kwargs) -> dict:
    defaults = dict(provider="openai", auth_method="api_key", base_url=None, config={},
                    secrets={"api_key": "x" * 20})
    defaults.update(kwargs)
    with pytest.raises(ValidationError) as exc:
        validate_connection_settings(**defaults)
    return exc.value.message_dict


def test_valid_settings_pass():
    validate_connection_settings(provider="openai", auth_method="api_key", base_url=None,
                                 config={}, secrets={"api_key": "x" * 20})


def test_unknown_provider_is_refused_with_a_pointer_to_the_catalog():
    assert "/api/v1/providers/" in _errors(provider="nope")["provider"][0]


def test_unknown_auth_method_names_the_supported_ones():
    message = _errors(auth_method="oauth_client_credentials")["auth_method"][0]
    assert "api_key" in message


def test_missing_required_secret_is_refused():
    assert "api_key" in _errors(secrets={})["credentials"][0]


def test_secret_sent_as_config_is_refused():
    errors = _errors(config={"api_key": "sk-abc"}, secrets={})
    assert any("secret" in m and "credentials" in m for m in errors["config"])


def test_config_sent_as_credential_is_refused():
    errors = _errors(provider="azure_openai", base_url="https://x.openai.azure.com",
                     secrets={"api_key": "k" * 20, "api_version": "2024-10-21"})
    assert any("not a secret" in m for m in errors["credentials"])


def test_missing_required_config_field_is_refused():
    errors = _errors(provider="vertex_ai", auth_method="service_account",
                     secrets={"service_account_json": "{}"})
    assert any("project_id" in m for m in errors["config"])


def test_unknown_config_field_lists_the_allowed_ones():
    errors = _errors(config={"colour": "blue"})
    assert "organization" in errors["config"][0]


def test_provider_without_default_endpoint_requires_base_url():
    errors = _errors(provider="openai_compatible")
    assert "base_url" in errors


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com/v1", "http://u:p@example.com",
                                 "https://example.com/v1?key=abc", "http://"])
def test_bad_base_urls_are_refused(url):
    assert "base_url" in _errors(base_url=url)
