"""List filters of the connections API: ?provider=, ?status=, ?is_active=, ?is_default=.

Free-text ?search= is DRF's SearchFilter (see ConnectionViewSet.search_fields).
"""

from __future__ import annotations

import django_filters
from rest_framework.exceptions import ValidationError
from rest_framework.filters import SearchFilter

from .models import Connection, ConnectionStatus


class ConnectionFilter(django_filters.FilterSet):
    """Filters for GET /api/v1/connections/; an unknown ?status= value is a 400."""

    provider = django_filters.CharFilter(field_name="provider", max_length=50,
                                         help_text="A provider name, e.g. openai.")
    status = django_filters.ChoiceFilter(choices=ConnectionStatus.choices)
    is_active = django_filters.BooleanFilter()
    is_default = django_filters.BooleanFilter()

    class Meta:
        model = Connection
        fields = ["provider", "status", "is_active", "is_default"]


class BoundedSearchFilter(SearchFilter):
    """DRF's SearchFilter with a length limit: a megabyte of search terms would become a
    query too large for the database (a 500); it is a 400 instead."""

    max_length = 200

    def get_search_terms(self, request):
        value = request.query_params.get(self.search_param, "")
        if len(value) > self.max_length:
            raise ValidationError(
                {self.search_param: [f"At most {self.max_length} characters."]})
        return super().get_search_terms(request)
