"""Hostile and malformed input to the connections API: always a 4xx in the one error shape."""

from __future__ import annotations

import json

import pytest

from connections.models import Connection
from tests.factories import ConnectionFactory

from .api_support import LIST_URL, assert_error, detail_url

pytestmark = pytest.mark.django_db

KEY = "sk-test-key-0123456789-WXYZ"
HUGE = "x" * 1_000_000


def body(**overrides):
    return {"name": "n", "provider": "openai", "credentials": {"api_key": KEY}, **overrides}


@pytest.fixture
def conn():
    return ConnectionFactory(name="target")


@pytest.mark.parametrize("field,value", [
    ("name", 123),
    ("name", None),
    ("name", ["a"]),
    ("provider", {"a": 1}),
    ("auth_method", 7),
    ("base_url", 5),
    ("base_url", "not a url"),
    ("base_url", "ftp://example.com"),
    ("base_url", "http://example.com:99999/"),
    ("default_model", ["x"]),
    ("config", "organization=x"),
    ("config", ["a"]),
    ("config", {"organization": 5}),
    ("config", {"organization": {"nested": "x"}}),
    ("config", {"organization": "with\x00nul"}),
    ("config", {"nope": "x"}),
    ("credentials", "sk-plain-string"),
    ("credentials", ["sk-a"]),
    ("credentials", {"api_key": 12345678901234}),
    ("credentials", {"api_key": {"value": KEY}}),
    ("credentials", {"api_key": True}),
    ("credentials", {"not_a_field": KEY}),
    ("is_active", "banana"),
    ("is_active", [True]),
])
def test_wrong_types_and_values_on_create_are_400_naming_the_field(staff_client, field, value):
    error = assert_error(staff_client.post(LIST_URL, body(**{field: value}), format="json"), 400)
    assert field in error["fields"], error
    assert not Connection.objects.exists()


@pytest.mark.parametrize("field,value", [
    ("name", 123), ("credentials", {"api_key": 42}), ("config", []), ("base_url", "nope"),
    ("is_active", "maybe"), ("provider", "skynet"),
])
def test_wrong_types_on_update_are_400(staff_client, conn, field, value):
    error = assert_error(staff_client.patch(detail_url(conn), {field: value}, format="json"), 400)
    assert field in error["fields"]
    assert Connection.objects.get(pk=conn.pk).revision == conn.revision


def test_unknown_fields_are_a_400_that_names_them(staff_client):
    error = assert_error(staff_client.post(LIST_URL, body(api_key=KEY, colour="blue"),
                                           format="json"), 400)
    assert set(error["fields"]) == {"api_key", "colour"}
    assert error["fields"]["colour"] == ["Unknown field."]
    assert "api_key" in error["message"] or "colour" in error["message"]
    assert not Connection.objects.exists()


@pytest.mark.parametrize("field", ["id", "is_default", "status", "revision", "secrets",
                                   "last_tested_at", "used_by_count"])
def test_read_only_and_internal_fields_cannot_be_written(staff_client, conn, field):
    error = assert_error(staff_client.patch(detail_url(conn), {field: "x"}, format="json"), 400)
    assert field in error["fields"]
    current = Connection.objects.get(pk=conn.pk)
    assert current.revision == conn.revision and current.is_default is False


@pytest.mark.parametrize("field,value", [
    ("name", HUGE),
    ("provider", HUGE),
    ("base_url", "https://example.com/" + HUGE),
    ("default_model", HUGE),
    ("auth_method", HUGE),
    ("credentials", {"api_key": HUGE}),
    ("config", {"organization": HUGE}),
    ("credentials", {HUGE: KEY}),
])
def test_huge_strings_are_a_400(staff_client, field, value):
    response = staff_client.post(LIST_URL, body(**{field: value}), format="json")
    error = assert_error(response, 400)
    assert field in error["fields"]
    assert len(response.content) < 10_000  # the value is not echoed back
    assert not Connection.objects.exists()


def test_huge_search_is_a_400(staff_client):
    error = assert_error(staff_client.get(LIST_URL, {"search": "a b " * 50_000}), 400)
    assert "search" in error["fields"]


@pytest.mark.parametrize("name", ["Ünïcødé 🚀 名前", "שלום", "emoji 👩‍💻👩🏽‍🔬", "a\u200bb"])
def test_unicode_names_round_trip(staff_client, name):
    response = staff_client.post(LIST_URL, body(name=name), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["name"] == name
    assert staff_client.get(LIST_URL, {"search": name}).json()["results"][0]["name"] == name


def test_nul_character_in_name_is_a_400(staff_client):
    error = assert_error(staff_client.post(LIST_URL, body(name="a\x00b"), format="json"), 400)
    assert "name" in error["fields"]


@pytest.mark.parametrize("raw", ["[]", "[1, 2]", '"a string"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_a_400(staff_client, conn, raw):
    for method, url in (("post", LIST_URL), ("patch", detail_url(conn)), ("put", detail_url(conn)),
                        ("post", f"{LIST_URL}from-preset/"),
                        ("post", f"{detail_url(conn)}move-bindings/")):
        response = getattr(staff_client, method)(url, raw, content_type="application/json")
        assert_error(response, 400)


@pytest.mark.parametrize("raw", ["{", "{'single': 'quotes'}", "\xff\xfe", "{\"a\": NaN}",
                                 "[" * 100_000])
def test_malformed_json_is_a_400(staff_client, raw):
    response = staff_client.post(LIST_URL, raw, content_type="application/json")
    assert_error(response, 400)


def test_empty_body_is_a_400_naming_required_fields(staff_client):
    error = assert_error(staff_client.post(LIST_URL, "", content_type="application/json"), 400)
    assert {"name", "provider"} <= set(error["fields"])


def test_unsupported_media_type_is_a_415(staff_client):
    response = staff_client.post(LIST_URL, "<xml/>", content_type="application/xml")
    assert_error(response, 415)


@pytest.mark.parametrize("bad", [
    "not-a-uuid", "1", "00000000-0000-0000-0000-00000000000", "00000000-0000-0000-0000-0000000000000",
    "zzzzzzzz-0000-0000-0000-000000000000", "%00", "..", "' OR 1=1 --", "💥",
])
@pytest.mark.parametrize("suffix,method", [
    ("", "get"), ("", "patch"), ("", "put"), ("", "delete"), ("set-default/", "post"),
    ("dependents/", "get"), ("move-bindings/", "post"),
])
def test_invalid_uuid_in_the_url_is_a_404(staff_client, bad, suffix, method):
    response = getattr(staff_client, method)(f"{LIST_URL}{bad}/{suffix}", {}, format="json")
    assert_error(response, 404)


def test_uppercase_uuid_of_a_missing_connection_is_a_404(staff_client):
    assert_error(staff_client.get(detail_url("ABCDEF00-0000-0000-0000-000000000000")), 404)


def test_bad_page_is_a_404_and_bad_page_size_is_ignored(staff_client, conn):
    assert_error(staff_client.get(LIST_URL, {"page": "abc"}), 404)
    assert_error(staff_client.get(LIST_URL, {"page": 99}), 404)
    assert staff_client.get(LIST_URL, {"page_size": "lots"}).status_code == 200


def test_unknown_ordering_is_ignored(staff_client, conn):
    assert staff_client.get(LIST_URL, {"ordering": "secrets"}).status_code == 200


def test_method_not_allowed_is_a_405_in_the_error_shape(staff_client, conn):
    assert_error(staff_client.post(detail_url(conn), {}, format="json"), 405)
    assert_error(staff_client.get(f"{detail_url(conn)}set-default/"), 405)


def test_error_message_does_not_echo_a_huge_value(staff_client):
    response = staff_client.post(LIST_URL, body(name="n" * 5000), format="json")
    assert "n" * 200 not in response.content.decode()


def test_json_content_of_errors_is_parseable(staff_client):
    response = staff_client.post(LIST_URL, body(colour="x"), format="json")
    assert json.loads(response.content)["error"]["code"] == "invalid"
