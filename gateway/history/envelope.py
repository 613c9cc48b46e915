"""The frames of envelope mode (``?envelope=1``), built once per message for all of a user's
envelope sockets.

    {"type":"message","position":"<opaque>","data":<payload>}   position absent without history
    {"type":"message","position":"<opaque>","group":"<id>","data":<payload>}   from a group
                                                                ("*": a broadcast)
    {"type":"recovery","recovered":true|false,"replayed":N[,"reason":"..."]}

``data`` is the published payload as is when it is one JSON value (nested at most
``untrusted_json.MAX_DEPTH`` deep), else the payload as a JSON string.

A frame is at most the payload limit plus ``MAX_OVERHEAD`` (``fits``), so that a connection's
queue holds at most its length times that: escaping makes a control character six bytes, and
the envelope of a payload under the limit can be far over it. One that does not fit is dropped.
"""

from __future__ import annotations

import json

from gateway import untrusted_json
from gateway.history.position import MAX_CURSOR_LENGTH

_MESSAGE = b'{"type":"message","data":'
_WITH_POSITION = b'{"type":"message","position":"'
_DATA = b'","data":'
_GROUP = b'","group":'
_GROUP_DATA = b',"data":'
# A group id as JSON: 256 characters of at most 4 bytes (an escaped quote takes 2), and quotes.
_MAX_GROUP_JSON = 256 * 4 + 2
# What a message envelope adds to its data, at most: the longest cursor and group id there are.
MAX_OVERHEAD = len(_WITH_POSITION) + MAX_CURSOR_LENGTH + len(_GROUP) + _MAX_GROUP_JSON + len(_GROUP_DATA) + 1


def _json_value(data: bytes) -> bytes:
    # Parsed as text: given bytes, json guesses UTF-16 or UTF-32 from NUL bytes, and UTF-8 text
    # that parses that way is not JSON as sent. Replayed entries were not checked on the way in
    # as live ones are: never fail on one.
    try:
        text, as_sent = data.decode(), True
    except UnicodeDecodeError:
        text, as_sent = data.decode(errors="replace"), False
    if not untrusted_json.is_json(text):
        return json.dumps(text, ensure_ascii=False).encode()
    return data if as_sent else text.encode()


def message(data: bytes, position: str | None = None, group: str | None = None) -> bytes:
    """An envelope for a valid UTF-8 payload; ``group`` names the group it came from ("*": a
    broadcast), None for the user's own."""
    if group is not None:
        label = json.dumps(group, ensure_ascii=False).encode()
        if position is None:
            return b'{"type":"message","group":%s,"data":%s}' % (label, _json_value(data))
        return b"%s%s%s%s%s%s}" % (
            _WITH_POSITION,
            position.encode(),
            _GROUP,
            label,
            _GROUP_DATA,
            _json_value(data),
        )
    if position is None:
        return _MESSAGE + _json_value(data) + b"}"
    return b"%s%s%s%s}" % (_WITH_POSITION, position.encode(), _DATA, _json_value(data))


def fits(frame: bytes, max_payload_size: int) -> bool:
    """Whether a message envelope is within the bound of a queued frame."""
    return len(frame) <= max_payload_size + MAX_OVERHEAD


def position_of(frame: bytes) -> str | None:
    """The position of an envelope this module built; None for any other frame."""
    if not frame.startswith(_WITH_POSITION):
        return None
    end = frame.find(b'"', len(_WITH_POSITION))
    return frame[len(_WITH_POSITION) : end].decode() if end > 0 else None


def recovery(recovered: bool, replayed: int, reason: str | None = None) -> bytes:
    frame: dict[str, object] = {"type": "recovery", "recovered": recovered, "replayed": replayed}
    if reason is not None:
        frame["reason"] = reason
    return json.dumps(frame, separators=(",", ":")).encode()
