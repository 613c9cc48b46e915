"""Small helpers of the brokers (gateway/broker/redis.py, cluster.py): command batches, confirmations."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from redis.crc import key_slot

from gateway.broker import BrokerUnavailable

# Redis accepts far more, but a bounded command keeps one resubscribe from stalling the reader.
_CHANNELS_PER_COMMAND = 1000


def ignore(user_id: str) -> None:
    pass


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
