"""The OpenAPI schema (drf-spectacular): valid, without warnings, and honest about secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

ROOT = Path(__file__).resolve().parent.parent


def test_spectacular_validate_fail_on_warn_passes(tmp_path):
    """`manage.py spectacular --validate --fail-on-warn` for the whole project exits 0."""
    out = tmp_path / "schema.yaml"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "llmconn.test_settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
         "--file", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    schema = yaml.safe_load(out.read_text())
    for p in ("/api/v1/connections/", "/api/v1/connections/{id}/",
              "/api/v1/connections/from-preset/", "/api/v1/connections/{id}/set-default/",
              "/api/v1/connections/{id}/dependents/", "/api/v1/connections/{id}/move-bindings/",
              "/api/v1/providers/", "/api/v1/providers/{name}/", "/api/v1/presets/"):
        assert p in schema["paths"], p


def _schema_of(*url_modules: str) -> dict:
    patterns = [path("api/v1/", include(([path("", include(m)) for m in url_modules], "api"),
                                        namespace="v1"))]
    GENERATOR_STATS.reset()
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)
    problems = bool(GENERATOR_STATS)
    GENERATOR_STATS.reset()
    assert not problems, "drf-spectacular warned or erred on these endpoints (see output)"
    validate_schema(schema)
    return schema


@pytest.fixture(scope="module")
def schema() -> dict:
    return _schema_of("providers.api.urls", "connections.api.urls")


def test_connections_and_providers_schema_is_clean_on_its_own(schema):
    """Clean for these endpoints alone, whatever other apps' endpoints do."""
    assert "/api/v1/connections/{id}/move-bindings/" in schema["paths"]


def test_id_is_a_uuid_path_parameter(schema):
    params = schema["paths"]["/api/v1/connections/{id}/"]["get"]["parameters"]
    assert params[0]["name"] == "id"
    assert params[0]["schema"]["type"] == "string"
    assert params[0]["schema"]["pattern"].startswith("^[0-9a-fA-F]{8}-")


def test_credentials_are_write_only_and_the_output_has_only_hints(schema):
    components = schema["components"]["schemas"]
    request = components["ConnectionInputRequest"]["properties"]
    assert request["credentials"]["additionalProperties"]["type"] == "string"
    output = components["Connection"]["properties"]
    assert "credentials" in output and "config" in output
    hint = components["CredentialState"]["properties"]
    assert set(hint) == {"set", "hint", "readable"}
    assert not any(p.get("writeOnly") for p in output.values())


def test_errors_are_documented_in_the_one_shape(schema):
    delete = schema["paths"]["/api/v1/connections/{id}/"]["delete"]["responses"]
    assert delete["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
