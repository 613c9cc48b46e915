"""A message's position in its user's history: ``"<offset>-<epoch>"``, opaque to clients.

The publisher library writes the same format (gateway/publishing/publisher.py ``position``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.keys import MAX_GROUPS
from gateway.wire import MAX_EPOCH_LENGTH, MAX_OFFSET_DIGITS

# The bounds of the wire format: offsets fit Lua's exact integers; epochs are what
# gateway/lua/publish.lua makes (hex).
_POSITION = re.compile(rf"([0-9]{{1,{MAX_OFFSET_DIGITS}}})-([0-9A-Za-z]{{1,{MAX_EPOCH_LENGTH}}})")

# A connection's composite cursor (gateway/history/cursor.py), at most: "t" and 13 digits, the
# user's and the broadcast's entries, one per group ("g", ten hex digits, a position), and a
# dot between each two.
_ENTRY = MAX_OFFSET_DIGITS + 1 + MAX_EPOCH_LENGTH
MAX_CURSOR_LENGTH = 14 + 2 * (1 + _ENTRY) + MAX_GROUPS * (11 + _ENTRY) + MAX_GROUPS + 2


class Position(NamedTuple):
    epoch: str
    offset: int

    def covers(self, epoch: str, offset: int) -> bool:
        """Whether a message at (``epoch``, ``offset``) is at or before this position."""
        return epoch == self.epoch and offset <= self.offset


def format_position(epoch: str, offset: int) -> str:
    return f"{offset}-{epoch}"


def parse_position(text: str) -> Position | None:
    """None for anything the gateway never gave out: garbage, truncated, huge."""
    match = _POSITION.fullmatch(text) if len(text) <= 64 else None
    if match is None:
        return None
    return Position(match.group(2), int(match.group(1)))
