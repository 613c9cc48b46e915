"""What the hub drops instead of delivering: each drop counted for every socket it would have
reached (``websocket_messages_dropped_total{reason}``) and logged in one line.

Publishers choose what is dropped and how often, so the lines go through the throttled log: a
flood of bad publishes costs a few lines, while the metrics count every one.
"""

from __future__ import annotations

import logging
from typing import Protocol

from gateway import close_codes
from gateway.close_codes import Refusal
from gateway.telemetry import metrics
from gateway.telemetry.throttled_log import ThrottledLog

log = ThrottledLog(logging.getLogger("gateway.hub"))


class Endable(Protocol):
    def end(self, reason: Refusal) -> None: ...


def too_large(size: int, limit: int, sockets: int) -> None:
    metrics.MESSAGES_DROPPED.labels("too_large").inc(sockets)
    log.warning("dropped a published payload of %d bytes: over WEBSOCKET_MAX_PAYLOAD_SIZE (%d)", size, limit)


def envelope_too_large(size: int, limit: int) -> None:
    """An envelope over the bound of a queued frame (the payload fit, its escapes did not): the
    raw sockets still get the payload; each envelope socket's drop is counted where it is."""
    log.warning(
        "dropped an envelope of %d bytes: over WEBSOCKET_MAX_PAYLOAD_SIZE (%d) once escaped", size, limit
    )


def invalid_utf8(sockets: int) -> None:
    metrics.MESSAGES_DROPPED.labels("invalid_utf8").inc(sockets)
    log.warning("dropped a published payload that is not valid UTF-8")


def malformed(size: int, sockets: int) -> None:
    """A 0xFF message that does not parse, or of a kind this gateway does not know."""
    metrics.MESSAGES_DROPPED.labels("malformed").inc(sockets)
    log.warning("dropped a malformed gateway message (0xFF, %d bytes)", size)


def push_failed(outbox: Endable) -> None:
    # This runs inside the worker's only pub/sub reader: one broken socket must not stop it,
    # nor cost the user's other sockets this message.
    metrics.MESSAGES_DROPPED.labels("send_failed").inc()
    log.exception("a connection failed to take a message; it is ended")
    outbox.end(close_codes.INTERNAL_ERROR)
