"""user id -> this worker's connections: the one registry of local users.

``add`` says when a connection is its user's first here and ``remove`` when it was the last, so
admission knows when to subscribe and unsubscribe the user's channel; after a reconnect the
broker re-subscribes every user ``user_ids`` lists. ``add_member`` and ``remove_member`` do the
same for groups (gateway/admission/groups.py), named where a user id would be by
``keys.group_source``. Delivery is synchronous and never awaits a socket.

A plain payload to a user with only raw sockets takes the plain path: one set lookup more than
before history existed. The gateway's own messages (0xFF, gateway/wire.py: they fail the UTF-8
check at their first byte; history messages, and control commands for gateway/control.py),
users with envelope sockets, users whose gap is being filled (gateway/history/gap.py) and
groups take the general path.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Protocol

from gateway import control, drops, keys, wire
from gateway.close_codes import Refusal
from gateway.history import envelope
from gateway.history.position import Position, format_position
from gateway.history.state import HistoryState
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE
from gateway.telemetry import metrics

# The first byte of every gateway message (wire.MARK), which no UTF-8 text starts with.
_OWN = bytes([wire.MARK])


class Outbox(Protocol):
    # The id of the connection's lease (as ``python -m gateway connections`` lists it).
    connection_id: str
    # Envelope mode (?envelope=1): JSON frames instead of the payload byte for byte.
    envelope: bool
    # An envelope socket whose cursor (gateway/history/cursor.py) is composite: its user's
    # history messages get a frame of their own too, not the one shared by the user's sockets.
    composite: bool

    def push(self, payload: bytes, received_at: float) -> None: ...

    def push_history(
        self, group: str | None, message: wire.HistoryMessage, shared: bytes | None, received_at: float
    ) -> None:
        """An envelope socket's history message of ``group`` (None: its user's): ``shared`` is the
        user's envelope built once, when its cursor is not composite; a copy is dropped."""

    def end(self, reason: Refusal) -> None: ...


class Hub:
    def __init__(self, max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE, max_held: int = 256) -> None:
        self._max_payload_size = max_payload_size
        # Lists, not sets: a user holds a handful of sockets at most, and an empty set alone
        # costs more than a short list.
        self._by_user: dict[str, list[Outbox]] = {}
        self._connections = 0
        # Per local user: the last history position delivered, when it joined, what is held
        # while its gap is read. The gap filler reads it too.
        self.history = HistoryState(max_held)
        self._held = self.history.holds
        # Envelope sockets per user that has any; with the held users, the users off the plain path.
        self._envelopes: dict[str, int] = {}
        self._general: set[str] = set()
        # The groups (``keys.group_source``: "{team", the broadcast "{*") with local members, each
        # an ordered set (every socket is the broadcast's): subscriptions, holds and gap fills
        # take them as users.
        self._members: dict[str, dict[Outbox, None]] = {}

    @property
    def connection_count(self) -> int:
        return self._connections

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    def connections(self) -> list[Outbox]:
        return [outbox for outboxes in self._by_user.values() for outbox in outboxes]

    def user_ids(self) -> list[str]:
        """The users and group sources with local connections: the channels to hold."""
        return [*self._by_user, *self._members]

    def _outboxes(self, user_id: str) -> Collection[Outbox] | None:
        return self._by_user.get(user_id) if user_id[:1] != "{" else self._members.get(user_id)

    def add_member(self, group_id: str, outbox: Outbox) -> bool:
        """Make a connection a member of a group (``keys.BROADCAST``: of the broadcast); True when
        it is the group's first member here."""
        source = keys.group_source(group_id)
        self._general.add(source)  # its frames carry the group: never the plain path
        members = self._members.get(source)
        if members is None:
            self._members[source] = {outbox: None}
            self.history.joined(source)
            return True
        members[outbox] = None
        return False

    def remove_member(self, group_id: str, outbox: Outbox) -> bool:
        """End a membership; True when it was the group's last member here."""
        source = keys.group_source(group_id)
        members = self._members[source]
        del members[outbox]
        if members:
            return False
        del self._members[source]
        self.history.left(source)
        self._general.discard(source)
        return True

    def count(self, user_id: str) -> int:
        """The user's connections here."""
        return len(self._by_user.get(user_id, ()))

    def add(self, user_id: str, outbox: Outbox) -> bool:
        """Register a connection; True when it is the user's first one here."""
        self._connections += 1
        if outbox.envelope:
            self._envelopes[user_id] = self._envelopes.get(user_id, 0) + 1
            self._general.add(user_id)
        outboxes = self._by_user.get(user_id)
        if outboxes is None:
            self._by_user[user_id] = [outbox]
            self.history.joined(user_id)
            return True
        outboxes.append(outbox)
        return False

    def remove(self, user_id: str, outbox: Outbox) -> bool:
        """Forget a connection; True when it was the user's last one here."""
        outboxes = self._by_user[user_id]
        outboxes.remove(outbox)
        self._connections -= 1
        if outbox.envelope:
            self._envelopes[user_id] -= 1
            if not self._envelopes[user_id]:
                del self._envelopes[user_id]
                self._sort(user_id)
        if outboxes:
            return False
        del self._by_user[user_id]
        self.history.left(user_id)
        self._general.discard(user_id)
        return True

    def _sort(self, user_id: str) -> None:
        if user_id in self._envelopes or user_id in self._held or user_id[:1] == "{":
            self._general.add(user_id)
        else:
            self._general.discard(user_id)

    def hold(self, user_id: str) -> int | None:
        """Hold what arrives for the user until ``deliver_held``: the hold's generation, or None."""
        if self._outboxes(user_id) is None:
            return None
        self._general.add(user_id)
        return self._held.hold(user_id)

    def deliver_held(self, user_id: str, generation: int, gap: Position | None, entries: list[bytes]) -> None:
        """Deliver the gap's ``entries`` (offsets after ``gap``), then what the hold ``generation``
        may deliver (gateway/history/held.py), in order, dropping what the gap carried."""
        held = self._held.take(user_id, generation)
        if held is None:
            return
        self._sort(user_id)
        outboxes = self._outboxes(user_id)  # a held user is a local one
        assert outboxes is not None
        if gap is not None:
            metrics.MESSAGES_REPLAYED.inc(len(entries))
            group = keys.group_of(user_id)
            for offset, data in enumerate(entries, gap.offset + 1):
                self._history(user_id, wire.HistoryMessage(gap.epoch, offset, data), outboxes, group)
        for payload in held:
            self._route(user_id, payload, outboxes)

    def notify(self, user_id: str, frame: bytes) -> None:
        """Send a gateway frame (a recovery notice) to the user's envelope sockets only."""
        for outbox in self._outboxes(user_id) or ():
            if outbox.envelope:
                outbox.push(frame, time.monotonic())

    def deliver(self, user_id: str, payload: bytes) -> None:
        """Queue one published payload on every local connection of the user."""
        metrics.count_received()
        # Users first: the plain path pays one lookup, as before groups.
        outboxes: Collection[Outbox] | None = self._by_user.get(user_id) or self._members.get(user_id)
        if not outboxes:
            # Published between our last connection leaving and UNSUBSCRIBE taking effect.
            metrics.MESSAGES_DROPPED.labels("no_connection").inc()
            return
        if user_id in self._general:
            self._general_path(user_id, payload, outboxes)
            return
        if len(payload) > self._max_payload_size:
            # Bounds each connection's queued memory; checked before the UTF-8 scan it would cost.
            if payload[:2] == wire.HISTORY:  # a history message counts its data only
                self._general_path(user_id, payload, outboxes)
            else:
                drops.too_large(len(payload), self._max_payload_size, len(outboxes))
            return
        try:
            # A text frame must be valid UTF-8; checked once for all the user's sockets, which
            # then send the published bytes as they are.
            payload.decode()
        except UnicodeDecodeError:
            # No UTF-8 text starts with 0xFF: the gateway's own messages fail here, at their
            # first byte, and cost the plain path nothing.
            if payload[:1] == _OWN:
                self._general_path(user_id, payload, outboxes)
            else:
                drops.invalid_utf8(len(outboxes))
            return
        received_at = time.monotonic()
        for outbox in outboxes:
            try:
                outbox.push(payload, received_at)
            except Exception:
                drops.push_failed(outbox)

    def _general_path(self, user_id: str, payload: bytes, outboxes: Collection[Outbox]) -> None:
        if payload[:2] == wire.HISTORY:
            metrics.count_history()
        if user_id not in self._held:
            self._route(user_id, payload, outboxes)
        elif (given_up := self._held.add(user_id, payload)) is not None:
            self._sort(user_id)  # held too many: the gap is lost, what was held goes out now
            self.notify(user_id, envelope.recovery(False, 0, "overflow"))
            for held in given_up:
                self._route(user_id, held, outboxes)

    def _route(self, user_id: str, payload: bytes, outboxes: Collection[Outbox]) -> None:
        group = keys.group_of(user_id)
        if payload[:1] != _OWN:
            if len(payload) > self._max_payload_size:
                drops.too_large(len(payload), self._max_payload_size, len(outboxes))
            elif _is_utf8(payload):
                self._fan_out(outboxes, payload, None, None, group)
            else:
                drops.invalid_utf8(len(outboxes))
        elif payload[:2] == wire.HISTORY:
            message = wire.parse_history(payload)
            if message is None:
                drops.malformed(len(payload), len(outboxes))
            else:
                self._history(user_id, message, outboxes, group)
        elif payload[:2] == wire.CONTROL and group is None:  # no group's message ends a socket
            control.apply(payload, outboxes)
        else:  # a kind of the gateway's own messages this worker does not know
            drops.malformed(len(payload), len(outboxes))

    def _history(
        self, user_id: str, message: wire.HistoryMessage, outboxes: Collection[Outbox], group: str | None
    ) -> None:
        if not self.history.deliverable(user_id, Position(message.epoch, message.offset)):
            metrics.MESSAGES_DROPPED.labels("duplicate").inc(len(outboxes))
            return
        data = message.data
        if len(data) > self._max_payload_size:
            drops.too_large(len(data), self._max_payload_size, len(outboxes))
        elif _is_utf8(data):
            self._fan_out(outboxes, data, format_position(message.epoch, message.offset), message, group)
        else:
            drops.invalid_utf8(len(outboxes))

    def _fan_out(
        self,
        outboxes: Collection[Outbox],
        data: bytes,
        position: str | None,
        message: wire.HistoryMessage | None = None,
        group: str | None = None,
    ) -> None:
        """Raw sockets get ``data``; envelope sockets one envelope, built once for all of them,
        unless it is over the bound of a queued frame. A history message goes to each envelope
        socket with its cursor (``push_history``), sharing that envelope where the cursor allows."""
        received_at = time.monotonic()
        frame = None
        fits = True
        for outbox in outboxes:
            try:
                if not outbox.envelope:
                    outbox.push(data, received_at)
                    continue
                if message is not None and (group is not None or outbox.composite):
                    outbox.push_history(group, message, None, received_at)
                    continue
                if frame is None:
                    frame = envelope.message(data, position, group)
                    fits = envelope.fits(frame, self._max_payload_size)
                    if not fits:
                        drops.envelope_too_large(len(frame), self._max_payload_size)
                if not fits:
                    metrics.MESSAGES_DROPPED.labels("too_large").inc()
                elif message is not None:
                    outbox.push_history(None, message, frame, received_at)
                else:
                    outbox.push(frame, received_at)
            except Exception:
                drops.push_failed(outbox)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
