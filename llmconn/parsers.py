"""Request parsers of the API.

Python's json module raises RecursionError (not ValueError) on deeply nested input such as
100,000 "[" characters; DRF's JSONParser only turns ValueError into a 400, so that body would
be a 500. https://docs.python.org/3/library/json.html#json.JSONDecodeError
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """DRF's JSONParser, with too deeply nested JSON refused as a 400 (ParseError)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
