"""user id -> this worker's connections: the one registry of local users.

``add`` says when a connection is its user's first here and ``remove`` when it was the last, so
admission knows when to subscribe and unsubscribe the user's channel; after a reconnect the
broker re-subscribes every user ``user_ids`` lists. Delivery is synchronous and never awaits a
socket.

A plain payload to a user with only raw sockets takes the plain path: one set lookup more than
before history existed. The gateway's own messages (0xFF, gateway/wire.py: they fail the UTF-8
check at their first byte; history messages, and control commands for gateway/control.py),
users with envelope sockets and users whose gap is being filled (gateway/history/gap.py) take
the general path.
"""

from __future__ import annotations

import time
from typing import Protocol

from gateway import control, drops, metrics, wire
from gateway.close_codes import Refusal
from gateway.history import envelope
from gateway.history.held import Holds
from gateway.history.position import Position, format_position
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE


class Outbox(Protocol):
    # The id of the connection's lease (as ``python -m gateway connections`` lists it).
    connection_id: str
    # Envelope mode (?envelope=1): JSON frames instead of the payload byte for byte.
    envelope: bool
    # A resumed socket (?since=): the last position its replay carried, until a later one is
    # delivered; a history message at or below it arriving live is not sent again.
    replayed: Position | None

    def push(self, payload: bytes, received_at: float) -> None: ...

    def end(self, reason: Refusal) -> None: ...


class Hub:
    def __init__(self, max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE, max_held: int = 256) -> None:
        self._max_payload_size = max_payload_size
        # Lists, not sets: a user holds a handful of sockets at most, and an empty set alone
        # costs more than a short list.
        self._by_user: dict[str, list[Outbox]] = {}
        self._connections = 0
        # Per local user: the last history message delivered here, where a gap fill starts and
        # below which a message is a duplicate. O(users); nothing is kept per message.
        self._last: dict[str, Position] = {}
        # When each local user's first connection here arrived (ms, wall clock): where a gap fill
        # starts for a user that got no history message here yet.
        self._joined: dict[str, int] = {}
        # Users whose gap is being read after a reconnect: what arrives meanwhile waits here.
        self._held = Holds(max_held)
        # Envelope sockets per user that has any; with the held users, the users off the plain path.
        self._envelopes: dict[str, int] = {}
        self._general: set[str] = set()

    @property
    def connection_count(self) -> int:
        return self._connections

    @property
    def user_count(self) -> int:
        return len(self._by_user)

    def connections(self) -> list[Outbox]:
        return [outbox for outboxes in self._by_user.values() for outbox in outboxes]

    def user_ids(self) -> list[str]:
        return list(self._by_user)

    def add(self, user_id: str, outbox: Outbox) -> bool:
        """Register a connection; True when it is the user's first one here."""
        self._connections += 1
        if outbox.envelope:
            self._envelopes[user_id] = self._envelopes.get(user_id, 0) + 1
            self._general.add(user_id)
        outboxes = self._by_user.get(user_id)
        if outboxes is None:
            self._by_user[user_id] = [outbox]
            self._joined[user_id] = int(time.time() * 1000)
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
        self._last.pop(user_id, None)
        self._joined.pop(user_id, None)
        self._held.forget(user_id)
        self._general.discard(user_id)
        return True

    def _sort(self, user_id: str) -> None:
        if user_id in self._envelopes or user_id in self._held:
            self._general.add(user_id)
        else:
            self._general.discard(user_id)

    def last_delivered(self, user_id: str) -> Position | None:
        return self._last.get(user_id)

    def forget_position(self, user_id: str) -> None:
        """The user's history went back (a promoted replica lacked its last entries): what is
        published next takes a new epoch (a fork), or with an older publisher reuses offsets
        delivered here, and is no copy of them either way."""
        self._last.pop(user_id, None)

    def joined_at(self, user_id: str) -> int | None:
        """When the user's first connection here arrived, ms on the wall clock."""
        return self._joined.get(user_id)

    def hold(self, user_id: str) -> int | None:
        """Hold what arrives for the user until ``release``: the hold's generation, or None."""
        if user_id not in self._by_user:
            return None
        self._general.add(user_id)
        return self._held.hold(user_id)

    def holding(self, user_id: str, generation: int) -> bool:
        return self._held.holding(user_id, generation)

    def release(self, user_id: str, generation: int, gap: Position | None, entries: list[bytes]) -> None:
        """Deliver the gap's ``entries`` (offsets after ``gap``), then what the hold ``generation``
        may release (gateway/history/held.py), in order, dropping what the gap carried."""
        held = self._held.take(user_id, generation)
        if held is None:
            return
        self._sort(user_id)
        outboxes = self._by_user[user_id]  # a held user is a local one
        if gap is not None:
            metrics.MESSAGES_REPLAYED.inc(len(entries))
            for offset, data in enumerate(entries, gap.offset + 1):
                self._history(user_id, wire.HistoryMessage(gap.epoch, offset, data), outboxes)
        for payload in held:
            self._route(user_id, payload, outboxes)

    def notify(self, user_id: str, frame: bytes) -> None:
        """Send a gateway frame (a recovery notice) to the user's envelope sockets only."""
        for outbox in self._by_user.get(user_id, ()):
            if outbox.envelope:
                outbox.push(frame, time.monotonic())

    def deliver(self, user_id: str, payload: bytes) -> None:
        """Queue one published payload on every local connection of the user."""
        metrics.count_received()
        outboxes = self._by_user.get(user_id)
        if not outboxes:
            # Published between our last connection leaving and UNSUBSCRIBE taking effect.
            metrics.MESSAGES_DROPPED.labels("no_connection").inc()
            return
        if user_id in self._general:
            self._general_path(user_id, payload, outboxes)
            return
        if len(payload) > self._max_payload_size:
            # Bounds each connection's queued memory; checked before the UTF-8 scan it would cost.
            if payload[:1] == b"\xff":  # a history message counts its data only
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
            if payload[:1] == b"\xff":
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

    def _general_path(self, user_id: str, payload: bytes, outboxes: list[Outbox]) -> None:
        if payload[:2] == wire.HISTORY:
            metrics.count_history()
        if user_id not in self._held:
            self._route(user_id, payload, outboxes)
        elif (given_up := self._held.add(user_id, payload)) is not None:
            self._sort(user_id)  # held too many: the gap is lost, what was held goes out now
            self.notify(user_id, envelope.recovery(False, 0, "overflow"))
            for held in given_up:
                self._route(user_id, held, outboxes)

    def _route(self, user_id: str, payload: bytes, outboxes: list[Outbox]) -> None:
        if payload[:1] != b"\xff":
            if len(payload) > self._max_payload_size:
                drops.too_large(len(payload), self._max_payload_size, len(outboxes))
            elif _is_utf8(payload):
                self._fan_out(outboxes, payload, None)
            else:
                drops.invalid_utf8(len(outboxes))
        elif payload[1:2] == b"H":
            message = wire.parse_history(payload)
            if message is None:
                drops.malformed(len(payload), len(outboxes))
            else:
                self._history(user_id, message, outboxes)
        elif payload[1:2] == b"C":
            control.apply(payload, outboxes)
        else:  # a kind of the gateway's own messages this worker does not know
            drops.malformed(len(payload), len(outboxes))

    def _history(self, user_id: str, message: wire.HistoryMessage, outboxes: list[Outbox]) -> None:
        last = self._last.get(user_id)
        if last is not None and last.covers(message.epoch, message.offset):
            # Delivered already: by a gap fill that read it before it arrived live.
            metrics.MESSAGES_DROPPED.labels("duplicate").inc(len(outboxes))
            return
        self._last[user_id] = Position(message.epoch, message.offset)
        data = message.data
        if len(data) > self._max_payload_size:
            drops.too_large(len(data), self._max_payload_size, len(outboxes))
        elif _is_utf8(data):
            self._fan_out(outboxes, data, format_position(message.epoch, message.offset), message)
        else:
            drops.invalid_utf8(len(outboxes))

    def _fan_out(
        self,
        outboxes: list[Outbox],
        data: bytes,
        position: str | None,
        message: wire.HistoryMessage | None = None,
    ) -> None:
        """Raw sockets get ``data``; envelope sockets one envelope, built once for all of them,
        unless it is over the bound of a queued frame."""
        received_at = time.monotonic()
        frame = None
        fits = True
        for outbox in outboxes:
            try:
                if outbox.envelope:
                    if message is not None and outbox.replayed is not None and _replayed(outbox, message):
                        continue
                    if frame is None:
                        frame = envelope.message(data, position)
                        fits = envelope.fits(frame, self._max_payload_size)
                        if not fits:
                            drops.envelope_too_large(len(frame), self._max_payload_size)
                    if fits:
                        outbox.push(frame, received_at)
                    else:
                        metrics.MESSAGES_DROPPED.labels("too_large").inc()
                else:
                    outbox.push(data, received_at)
            except Exception:
                drops.push_failed(outbox)


def _replayed(outbox: Outbox, message: wire.HistoryMessage) -> bool:
    """Whether a resumed socket's replay carried ``message`` already (its live copy came late)."""
    last = outbox.replayed
    if last is not None and last.covers(message.epoch, message.offset):
        metrics.MESSAGES_DROPPED.labels("duplicate").inc()
        return True
    outbox.replayed = None  # past the replay: nothing later can be a copy of it
    return False


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
