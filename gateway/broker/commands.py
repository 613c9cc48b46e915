"""Small helpers of the brokers (gateway/broker/redis.py, cluster.py): command batches,
confirmations, a message whose handling failed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from redis.crc import key_slot

from gateway.broker import BrokerUnavailable
from gateway.telemetry import metrics
from gateway.telemetry.throttled_log import ThrottledLog

# Whoever can publish chooses how often a message fails: the log samples it, the metric counts it.
_log = ThrottledLog(logging.getLogger("gateway.subscriber"))

# One socket read can hold thousands of messages, all parsed without awaiting. Outboxes are
# flushed when a reader yields, so a larger slice puts more of a user's frames in one write;
# this one bounds how long other sockets wait (a few milliseconds).
YIELD_EVERY = 256
# Redis accepts far more, but a bounded command keeps one resubscribe from stalling the reader.
_CHANNELS_PER_COMMAND = 1000


def ignore(user_id: str) -> None:
    pass


def handler_failed() -> None:
    """A reader's ``on_message`` raised (a bug one payload triggers): that message is dropped,
    counted and logged with its traceback, and the reader goes on. Ending the session instead
    would cost every user of the worker what is published while it reconnects."""
    metrics.MESSAGES_DROPPED.labels("handler_failed").inc()
    _log.exception("dropped a published message whose handling failed")


async def confirmation(future: asyncio.Future[bool]) -> None:
    # Shielded: a connection cancelled while waiting leaves the wait of the user's others alone.
    if not await asyncio.shield(future):
        raise BrokerUnavailable("pub/sub connection lost before the subscription")


def batched(command: str, channels: list[bytes]) -> list[tuple[Any, ...]]:
    step = _CHANNELS_PER_COMMAND
    return [(command, *channels[i : i + step]) for i in range(0, len(channels), step)]


_Entry = TypeVar("_Entry", bound=tuple[bytes, Any, Any])


def by_slot(entries: list[_Entry]) -> list[list[_Entry]]:
    """Entries whose first item is a channel, grouped by the channel's cluster slot (one SSUBSCRIBE
    may name channels of one slot only), in groups of at most a thousand."""
    slots: dict[int, list[_Entry]] = {}
    for entry in entries:
        slots.setdefault(key_slot(entry[0]), []).append(entry)
    step = _CHANNELS_PER_COMMAND
    return [group[i : i + step] for group in slots.values() for i in range(0, len(group), step)]


def pubsub_options(worker_id: str) -> dict[str, Any]:
    """Connection options of a worker's pub/sub connection, in every mode."""
    # RESP2: messages arrive as plain arrays; under RESP3 redis-py routes each one through
    # its push-notification handlers, which format a debug string per message.
    return {
        "protocol": 2,
        "socket_connect_timeout": 5,
        # Bounds the connection handshake; message reads pass their own (infinite) timeout.
        "socket_timeout": 5,
        "client_name": f"gateway-sub:{worker_id}",
    }
