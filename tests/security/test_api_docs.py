"""Schema and Swagger UI (issue #16): /api/docs/ loaded swagger-ui-dist@latest from a CDN into
our origin (no SRI, no CSP) and both were open to anonymous users. Now the files are the app's
own (drf-spectacular-sidecar) and both need a signed-in user."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_anonymous_schema_is_a_401_in_the_error_shape():
    response = Client().get("/api/schema/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_anonymous_docs_go_to_the_login_page():
    response = Client().get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/api/docs/")


def test_signed_in_docs_load_only_our_own_files(plain_user):
    client = Client()
    client.force_login(plain_user)
    html = client.get("/api/docs/").content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in s
               for s in sources), sources
    assert not [s for s in sources if re.match(r"(https?:)?//", s)], sources
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    # Shipped as one of the app's static files (collectstatic + whitenoise serve it).
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


def test_signed_in_schema_is_served(plain_user):
    client = Client()
    client.force_login(plain_user)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200 and "/api/v1/connections/" in response.json()["paths"]
