"""One cursor per connection: where an envelope socket stands in each of its sources (its user,
its groups, the broadcast), carried as the ``position`` of every envelope frame and taken back as
``since``.

Two forms, both opaque to clients:

    <offset>-<epoch>                      the user's position alone (gateway/history/position.py):
                                          what a socket sends until its first group or broadcast
                                          message, and what earlier releases sent
    t<ms>[.u<pos>][.b<pos>][.g<h><pos>][.j<h><ms>]
                                          composite: ``t`` the time (ms) from which a source with
                                          no position in the cursor counts as missed; ``u`` the
                                          user, ``b`` the broadcast, ``g`` a group by ``h``, ten hex
                                          digits of a hash of its id; ``<pos>`` ``<offset>-<epoch>``;
                                          ``j`` a group a refresh joined, not given a message since:
                                          its messages count as missed from then (ms), not ``t``

Every character is one a URL carries unescaped. A group is named by a hash, not its id, so an
entry is at most 67 characters whatever the id: with 64 groups a cursor is at most
``MAX_LENGTH`` (4,482); with epochs as this gateway's publisher makes them (16 characters) and
offsets below a million, at most about 2,300 (a ``j`` entry is shorter than a ``g`` one, and a
group has one or the other). A group the socket is no longer a member of is left out, its
position forgotten: a refresh joining it again gives it a ``j`` entry, so neither what it was
given before nor what was published while the socket was not a member is replayed. A hash that
matches none of its groups is ignored, one that matches two of them (a collision) makes the
cursor unusable: ``recovered:false``, never a position given to the wrong one.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from gateway import drops
from gateway.history import envelope
from gateway.history.position import MAX_CURSOR_LENGTH, Position, format_position, parse_position
from gateway.keys import BROADCAST, MAX_GROUPS
from gateway.telemetry import metrics
from gateway.wire import HistoryMessage

_HASH_DIGITS = 10
MAX_LENGTH = MAX_CURSOR_LENGTH


@functools.lru_cache(maxsize=4096)
def group_hash(group_id: str) -> str:
    """Ten hex digits naming a group in a cursor (a collision within one token's 64 groups: about
    one in 500 million)."""
    return hashlib.blake2b(group_id.encode(), digest_size=_HASH_DIGITS // 2).hexdigest()


@dataclass(slots=True)
class Cursor:
    """What one envelope socket was given: the last position per source (``groups`` by group id,
    ``keys.BROADCAST`` for broadcasts) and ``since_ms``, where sources without one start."""

    since_ms: int
    user: Position | None = None
    groups: dict[str, Position] = field(default_factory=dict)
    # Groups a refresh joined and not given a message since: when (ms) their messages count from.
    joined: dict[str, int] = field(default_factory=dict)
    # Each group's entry as text, kept as it advances: a frame's cursor joins them.
    _entries: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def composite(self) -> bool:
        """Whether its text needs the composite form: a group or broadcast position is in it."""
        return bool(self.groups or self.joined)

    def position(self, group: str | None) -> Position | None:
        return self.user if group is None else self.groups.get(group)

    def since(self, group: str | None) -> int:
        """From when (ms) the messages of a source without a position count as missed."""
        return self.since_ms if group is None else self.joined.get(group, self.since_ms)

    def advance(self, group: str | None, position: Position) -> bool:
        """Record a message of ``group`` (None: the user) at ``position``; False when the cursor
        covers it already (a copy: the replay or a gap fill carried it)."""
        last = self.position(group)
        if last is not None and last.covers(position.epoch, position.offset):
            return False
        if group is None:
            self.user = position
        else:
            self.groups[group] = position
            self.joined.pop(group, None)
            self._entries.pop(group, None)
        return True

    def change_groups(self, left: tuple[str, ...], now: tuple[str, ...], at_ms: int) -> None:
        """A refresh took the socket from the groups ``left`` to ``now`` at ``at_ms``: forget the
        ones it left, and count a joined one's messages as missed from ``at_ms`` only (what it
        was given before it left, and what was published while it was not a member, never)."""
        for group in [g for g in (*self.groups, *self.joined) if g != BROADCAST and g not in now]:
            self.groups.pop(group, None)
            self.joined.pop(group, None)
            self._entries.pop(group, None)
        for group in now:
            if group not in left:
                self.joined[group] = at_ms

    def text(self) -> str:
        if not self.composite and self.user is not None:
            return format_position(self.user.epoch, self.user.offset)
        parts = [f"t{self.since_ms}"]
        if self.user is not None:
            parts.append("u" + format_position(self.user.epoch, self.user.offset))
        entries = self._entries
        for group, at in self.groups.items():
            entry = entries.get(group)
            if entry is None:
                name = "b" if group == BROADCAST else "g" + group_hash(group)
                entry = entries[group] = name + format_position(at.epoch, at.offset)
            parts.append(entry)
        parts += [f"j{group_hash(group)}{at}" for group, at in self.joined.items()]
        return ".".join(parts)


def parse_cursor(text: str, groups: tuple[str, ...]) -> tuple[Cursor, bool] | None:
    """The cursor ``text`` names for a socket of ``groups``, and whether it is the user-only form
    (its ``since_ms`` then still to be found: 0); None for anything the gateway never gave out."""
    if len(text) > MAX_LENGTH:
        return None
    single = parse_position(text)
    if single is not None:
        return Cursor(0, single), True
    entries = text.split(".")
    head = entries[0]
    digits = head[1:]
    # isdigit alone takes "²" and other digits int() refuses or reads: ASCII only.
    if len(entries) > MAX_GROUPS + 3 or head[:1] != "t" or len(head) > 14:
        return None
    if not (digits.isascii() and digits.isdigit()):
        return None
    cursor = Cursor(int(digits))
    by_hash: dict[str, str | None] = {}
    for member in groups:
        name = group_hash(member)
        # Two of its groups of one name: whose position an entry is cannot be told.
        by_hash[name] = None if name in by_hash else member
    for entry in entries[1:]:
        kind = entry[:1]
        if kind in ("g", "j"):
            name, rest = entry[1 : 1 + _HASH_DIGITS], entry[1 + _HASH_DIGITS :]
            group: str | None = by_hash.get(name)
            if group is None and name in by_hash:
                return None
            if kind == "g":
                at = parse_position(rest)
                if at is None:
                    return None
                if group is not None:
                    cursor.groups[group] = at
            elif 0 < len(rest) <= 13 and rest.isascii() and rest.isdigit():
                if group is not None:
                    cursor.joined[group] = int(rest)
            else:
                return None
            continue
        at = parse_position(entry[1:])
        if at is None or kind not in ("u", "b"):
            return None
        if kind == "u":
            cursor.user = at
        else:
            cursor.groups[BROADCAST] = at
    for group in [g for g in cursor.joined if g in cursor.groups]:
        del cursor.joined[group]  # a position says more than a time
    return cursor, False


def frame_for(
    cursor: Cursor, group: str | None, message: HistoryMessage, shared: bytes | None
) -> bytes | None:
    """The envelope of a history ``message`` of ``group`` (None: the user) for one socket, with its
    cursor advanced past it; None for a copy of one it was given. ``shared``: the envelope built
    once for every socket of a user, used while the cursor is in the user-only form."""
    if not cursor.advance(group, Position(message.epoch, message.offset)):
        return None
    if shared is not None and not cursor.composite:
        return shared
    return envelope.message(message.data, cursor.text(), group)


def fits(frame: bytes, max_payload_size: int) -> bool:
    """Whether a socket's own envelope is within the bound of a queued frame; one that is not is
    dropped and counted."""
    if envelope.fits(frame, max_payload_size):
        return True
    metrics.MESSAGES_DROPPED.labels("too_large").inc()
    drops.envelope_too_large(len(frame), max_payload_size)
    return False
