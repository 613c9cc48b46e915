"""user id -> this worker's connections: the one registry of local users.

``add`` says when a connection is its user's first here and ``remove`` when it was the last, so
admission knows when to subscribe and unsubscribe the user's channel; after a reconnect the
broker re-subscribes every user ``user_ids`` lists. Delivery is synchronous and never awaits a
socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway import close_codes, control, metrics, wire
from gateway.close_codes import Refusal
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE

log = logging.getLogger("gateway.hub")


class Outbox(Protocol):
    # The id of the connection's lease (as ``python -m gateway connections`` lists it).
    connection_id: str

    def push(self, payload: bytes, received_at: float) -> None: ...

    def end(self, reason: Refusal) -> None: ...


class Hub:
    def __init__(self, max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE) -> None:
        self._max_payload_size = max_payload_size
        # Lists, not sets: a user holds a handful of sockets at most, and an empty set alone
        # costs more than a short list.
        self._by_user: dict[str, list[Outbox]] = {}
        self._connections = 0

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
        return True

    def deliver(self, user_id: str, payload: bytes) -> None:
        """Queue one published payload on every local connection of the user."""
        metrics.count_received()
        outboxes = self._by_user.get(user_id)
        if not outboxes:
            # Published between our last connection leaving and UNSUBSCRIBE taking effect.
            metrics.MESSAGES_DROPPED.labels("no_connection").inc()
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
        if payload and payload[0] == 0xFF:
            # The gateway's own message (gateway/wire.py): no plain payload starts with 0xFF.
            # An index, not a slice: the plain path pays one integer compare (~25 ns).
            self._deliver_own(payload, outboxes)
            return
        try:
            # A text frame must be valid UTF-8; checked once for all the user's sockets, which
            # then send the published bytes as they are.
            payload.decode()
        except UnicodeDecodeError:
            metrics.MESSAGES_DROPPED.labels("invalid_utf8").inc(len(outboxes))
            log.warning("dropped a published payload that is not valid UTF-8")
            return
        received_at = time.monotonic()
        for outbox in outboxes:
            try:
                outbox.push(payload, received_at)
            except Exception:
                # This runs inside the worker's only pub/sub reader: one broken socket must not
                # stop it, nor cost the user's other sockets this message.
                metrics.MESSAGES_DROPPED.labels("send_failed").inc()
                log.exception("a connection failed to take a message; it is ended")
                outbox.end(close_codes.INTERNAL_ERROR)

    def _deliver_own(self, payload: bytes, outboxes: list[Outbox]) -> None:
        """Route a ``\\xff<kind>`` message to the handler of its kind byte."""
        handler = _OWN_KINDS.get(payload[1:2])
        if handler is None:
            metrics.MESSAGES_DROPPED.labels("unknown_kind").inc()
            log.warning("dropped a gateway message of unknown kind %r", payload[1:2])
            return
        handler(payload, outboxes)


# The gateway's own kinds of message (gateway/wire.py), by the byte after 0xFF.
_OWN_KINDS: dict[bytes, Callable[[bytes, list[Outbox]], object]] = {
    wire.CONTROL[1:]: control.apply,
}
