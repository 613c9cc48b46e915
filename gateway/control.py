"""The gateway's side of control commands: what a worker does with ``\\xffC`` on a user's channel.

A backend (``Publisher.disconnect``, ``python -m gateway disconnect``) publishes the command on the
user's own channel, so exactly the workers that hold the user hear it, in order with the user's
messages. No WebSocket client can send one: clients never publish, and no plain payload (valid
UTF-8) starts with the 0xFF byte that marks it (``gateway/wire.py``).

    disconnect            every connection of the user on this worker ends with 4003
    disconnect <conn-id>  only the connection holding that lease (ids as ``connections USER`` lists)
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Protocol

from gateway import close_codes, wire
from gateway.close_codes import Refusal
from gateway.publishing.control import DISCONNECT
from gateway.telemetry import metrics
from gateway.telemetry.throttled_log import ThrottledLog

log = ThrottledLog(logging.getLogger("gateway.control"))

# A control message is a command word and a connection id: anything longer is not one of ours.
MAX_CONTROL_SIZE = 512


class Controlled(Protocol):
    """A connection as the control commands see it: its lease's id, and a way to end it."""

    connection_id: str

    def end(self, reason: Refusal) -> None: ...


def apply(payload: bytes, connections: Collection[Controlled]) -> int:
    """Carry out one control message on the user's local connections; how many it ended."""
    command = wire.parse_control(payload) if len(payload) <= MAX_CONTROL_SIZE else None
    if command is None or command.command != DISCONNECT:
        metrics.MESSAGES_DROPPED.labels("bad_control").inc()
        log.warning("dropped a control message that is not a known command (%d bytes)", len(payload))
        return 0
    targets = [c for c in connections if command.argument is None or c.connection_id == command.argument]
    for connection in targets:
        connection.end(close_codes.DISCONNECTED)
    if targets:
        metrics.DISCONNECTS.labels("command").inc(len(targets))
    return len(targets)
