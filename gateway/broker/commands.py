"""Small helpers of the brokers (gateway/broker/redis.py, cluster.py) and their pub/sub sessions
(session.py): users' channels, command batches, confirmations, a message whose handling failed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from redis.crc import key_slot

from gateway import keys
from gateway.broker import BrokerUnavailable, MessageHandler
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


# A session's reader callback: the channel as Redis names it, and the payload.
ChannelHandler = Callable[[bytes, bytes], None]


def ignore(user_id: str) -> None:
    pass


class UserChannels:
    """Users' channels (``keys.user_channel``) as a session names them, and back."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._cut = len(prefix) + 1

    def channel(self, user_id: str) -> bytes:
        return keys.user_channel(self._prefix, user_id).encode()

    def user(self, channel: bytes) -> str:
        return channel[self._cut :].decode()

    def messages(self, on_message: MessageHandler) -> ChannelHandler:
        """``on_message`` for a session's reader: called with the user id, not the channel."""
        cut = self._cut

        def deliver(channel: bytes, payload: bytes) -> None:
            on_message(channel[cut:].decode(), payload)

        return deliver


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


_Entry = TypeVar("_Entry", bound=tuple[bytes, Any, Any])


def in_order(entries: list[_Entry]) -> list[list[_Entry]]:
    """Entries in their order, in groups of at most a thousand (one command each)."""
    step = _CHANNELS_PER_COMMAND
    return [entries[i : i + step] for i in range(0, len(entries), step)]


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
