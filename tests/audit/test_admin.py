"""The admin shows audit events read-only: no add, change or delete."""

import pytest
from django.test import Client

from audit.services import audit_record

pytestmark = pytest.mark.django_db


def test_admin_lists_and_shows_events_but_cannot_change_them(staff_user):
    event = audit_record(action="connection.update", target=("connection", "abc", "main"))
    client = Client()
    client.force_login(staff_user)
    listing = client.get("/admin/audit/auditevent/")
    assert listing.status_code == 200 and b"connection.update" in listing.content
    detail = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
