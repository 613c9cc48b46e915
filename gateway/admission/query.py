"""The /ws query string, parsed once per handshake and bounded.

The gateway reads three fields (``token``, ``envelope``, ``since``); a client may add a few of its
own (cache busters, tracing). A query with more fields than ``MAX_FIELDS``, or one the parser
cannot read, is malformed: the endpoint refuses it with 400 (4400 after a ``bearer`` offer), and
no other part of admission parses the query again.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

MAX_FIELDS = 32

EMPTY: Mapping[str, str] = {}


class MalformedQuery(Exception):
    """The query string cannot be read; the message says why (for the log line)."""


def parse(query_string: bytes) -> Mapping[str, str]:
    """The first value of each field (blank values kept); raises MalformedQuery."""
    if not query_string:
        return EMPTY
    try:
        # max_num_fields counts the separators before anything is split: a query of thousands
        # of fields costs one scan.
        fields = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:  # over MAX_FIELDS, or any other complaint of the parser
        raise MalformedQuery(f"query string unreadable or over {MAX_FIELDS} fields") from None
    query: dict[str, str] = {}
    for key, value in fields:
        query.setdefault(key, value)
    return query
