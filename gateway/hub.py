"""user id -> this worker's connections: the one registry of local users.

``add`` says when a connection is its user's first here and ``remove`` when it was the last, so
admission knows when to subscribe and unsubscribe the user's channel; after a reconnect the
broker re-subscribes every user ``user_ids`` lists. Delivery is synchronous and never awaits a
socket.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from gateway import close_codes, metrics, wire
from gateway.close_codes import Refusal
from gateway.history import envelope
from gateway.history.position import Position, format_position
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE

log = logging.getLogger("gateway.hub")


class Outbox(Protocol):
    # Envelope mode (?envelope=1): JSON frames instead of the payload byte for byte.
    envelope: bool

    def push(self, payload: bytes, received_at: float) -> None: ...

    def end(self, reason: Refusal) -> None: ...


class Hub:
    def __init__(self, max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> None:
        self._max_payload_size = max_payload_size
        # Lists, not sets: a user holds a handful of sockets at most, and an empty set alone
        # costs more than a short list.
        self._by_user: dict[str, list[Outbox]] = {}
        self._connections = 0
        # Per local user: the last history message delivered here, where a gap fill starts and
        # below which a message is a duplicate. O(users); nothing is kept per message.
        self._last: dict[str, Position] = {}
        # Users whose gap is being read after a reconnect: what arrives meanwhile waits here.
        self._held: dict[str, list[bytes]] = {}

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
        outboxes = self._by_user.get(user_id)
        if outboxes is None:
            self._by_user[user_id] = [outbox]
            return True
        outboxes.append(outbox)
        return False

    def remove(self, user_id: str, outbox: Outbox) -> bool:
        """Forget a connection; True when it was the user's last one here."""
        outboxes = self._by_user[user_id]
        outboxes.remove(outbox)
        self._connections -= 1
        if outboxes:
            return False
        del self._by_user[user_id]
        self._last.pop(user_id, None)
        self._held.pop(user_id, None)
        return True

    def last_delivered(self, user_id: str) -> Position | None:
        return self._last.get(user_id)

    def hold(self, user_id: str) -> bool:
        """Hold what arrives for the user until ``release``; False when not a local user."""
        if user_id not in self._by_user:
            return False
        self._held.setdefault(user_id, [])
        return True

    def release(self, user_id: str, gap: Position | None, entries: list[bytes]) -> None:
        """Deliver the gap's ``entries`` (offsets after ``gap``), then what was held, in order;
        a held message the gap already delivered is dropped as a duplicate."""
        held = self._held.pop(user_id, None)
        if gap is not None:
            metrics.MESSAGES_REPLAYED.inc(len(entries))
            for offset, data in enumerate(entries, gap.offset + 1):
                self.deliver(user_id, wire.history_message(gap.epoch, offset, data), received=False)
        for payload in held or ():
            self.deliver(user_id, payload, received=False)

    def notify(self, user_id: str, frame: bytes) -> None:
        """Send a gateway frame (a recovery notice) to the user's envelope sockets only."""
        for outbox in self._by_user.get(user_id, ()):
            if outbox.envelope:
                outbox.push(frame, time.monotonic())

    def deliver(self, user_id: str, payload: bytes, received: bool = True) -> None:
        """Queue one published payload on every local connection of the user; ``received``
        False for one read before (held during a gap fill), so it is counted once."""
        if received:
            metrics.count_received()
        outboxes = self._by_user.get(user_id)
        if not outboxes:
            # Published between our last connection leaving and UNSUBSCRIBE taking effect.
            metrics.MESSAGES_DROPPED.labels("no_connection").inc()
            return
        if payload[:1] == b"\xff":
            # The gateway's own messages (gateway/wire.py); the byte after 0xFF says which kind.
            self._own(user_id, payload, outboxes, received)
            return
        if self._held and user_id in self._held:
            self._held[user_id].append(payload)
            return
        if len(payload) > self._max_payload_size:
            # Bounds each connection's queued memory; checked before the UTF-8 scan it would cost.
            metrics.MESSAGES_DROPPED.labels("too_large").inc(len(outboxes))
            log.warning(
                "dropped a published payload of %d bytes: over WEBSOCKET_MAX_PAYLOAD_SIZE (%d)",
                len(payload),
                self._max_payload_size,
            )
            return
        try:
            # A text frame must be valid UTF-8; checked once for all the user's sockets, which
            # then send the published bytes as they are.
            payload.decode()
        except UnicodeDecodeError:
            metrics.MESSAGES_DROPPED.labels("invalid_utf8").inc(len(outboxes))
            log.warning("dropped a published payload that is not valid UTF-8")
            return
        self._fan_out(outboxes, payload, None)

    def _fan_out(self, outboxes: list[Outbox], payload: bytes, position: str | None) -> None:
        received_at = time.monotonic()
        frame = None
        for outbox in outboxes:
            try:
                if outbox.envelope:
                    if frame is None:
                        frame = envelope.message(payload, position)
                    outbox.push(frame, received_at)
                else:
                    outbox.push(payload, received_at)
            except Exception:
                # This runs inside the worker's only pub/sub reader: one broken socket must not
                # stop it, nor cost the user's other sockets this message.
                metrics.MESSAGES_DROPPED.labels("send_failed").inc()
                log.exception("a connection failed to take a message; it is ended")
                outbox.end(close_codes.INTERNAL_ERROR)

    def _own(self, user_id: str, payload: bytes, outboxes: list[Outbox], received: bool) -> None:
        if payload[1:2] == b"H":
            if received:
                metrics.count_history()
            self._history(user_id, payload, outboxes)
        else:
            metrics.MESSAGES_DROPPED.labels("invalid_utf8").inc(len(outboxes))

    def _history(self, user_id: str, payload: bytes, outboxes: list[Outbox]) -> None:
        if self._held and user_id in self._held:
            self._held[user_id].append(payload)
            return
        message = wire.parse_history(payload)
        if message is None:
            metrics.MESSAGES_DROPPED.labels("malformed").inc(len(outboxes))
            return
        last = self._last.get(user_id)
        if last is not None and last.epoch == message.epoch and message.offset <= last.offset:
            # Delivered already: by a gap fill that read it before it arrived live.
            metrics.MESSAGES_DROPPED.labels("duplicate").inc(len(outboxes))
            return
        self._last[user_id] = Position(message.epoch, message.offset)
        data = message.data
        if len(data) > self._max_payload_size:
            metrics.MESSAGES_DROPPED.labels("too_large").inc(len(outboxes))
            return
        try:
            data.decode()
        except UnicodeDecodeError:
            metrics.MESSAGES_DROPPED.labels("invalid_utf8").inc(len(outboxes))
            return
        self._fan_out(outboxes, data, format_position(message.epoch, message.offset))
