"""The Redis Cluster slot map as ``ClusterBroker`` (gateway/broker/cluster.py) knows it: which
master serves each of the 16384 slots, read with CLUSTER SLOTS from any node that answers.

Masters are numbered by the lowest slot they serve (``index``): a bounded, stable label for
metrics and health (a promoted replica takes its old master's slots, so its number).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import RedisError

log = logging.getLogger("gateway.subscriber")

Address = tuple[str, int]
SLOTS = 16384
# A node that does not answer within this is skipped for the next one.
_NODE_TIMEOUT = 1.0
# Tags tried when looking for a channel name in a given set of slots (each tag hits a slot at
# random, so a master holding 1% of the slots needs ~100 tries; this bound is never reached).
_TAG_TRIES = 1_000_000


def address_text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class SlotMap:
    def __init__(self, ranges: Iterable[tuple[int, int, Address]]) -> None:
        self.ranges = sorted(ranges)
        self._starts = [start for start, _, _ in self.ranges]
        firsts: dict[Address, int] = {}
        for start, _, address in self.ranges:
            firsts.setdefault(address, start)
        self._index = {address: i for i, address in enumerate(sorted(firsts, key=firsts.__getitem__))}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and other.ranges == self.ranges

    __hash__ = None  # type: ignore[assignment]

    @property
    def masters(self) -> list[Address]:
        return sorted(self._index, key=self._index.__getitem__)

    def owner(self, slot: int) -> Address | None:
        """The master serving ``slot``, or None when no master serves it (a failover under way)."""
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0:
            return None
        _, end, address = self.ranges[i]
        return address if slot <= end else None

    def index(self, address: Address) -> int | None:
        return self._index.get(address)

    def slots_of(self, address: Address) -> list[tuple[int, int]]:
        return [(start, end) for start, end, owner in self.ranges if owner == address]

    def channel_in(self, address: Address, stem: str) -> str | None:
        """``stem`` plus a hash tag that puts the channel in one of ``address``'s slots."""
        owned = self.slots_of(address)
        if not owned:
            return None
        for n in range(_TAG_TRIES):
            tag = str(n)
            slot = key_slot(tag.encode())
            if any(start <= slot <= end for start, end in owned):
                return f"{stem}:{{{tag}}}"
        return None


async def fetch(nodes: list[Address], options: dict[str, Any]) -> SlotMap:
    """CLUSTER SLOTS from the first node of ``nodes`` that answers (the others shuffled, so a dead
    node is not always asked first); raises the last error when none does."""
    first, rest = nodes[:1], nodes[1:]
    random.shuffle(rest)
    error: Exception = ConnectionError("no cluster node to ask")
    for host, port in itertools.chain(first, rest):
        client = aioredis.Redis(
            host=host,
            port=port,
            socket_connect_timeout=_NODE_TIMEOUT,
            socket_timeout=_NODE_TIMEOUT,
            **options,
        )
        try:
            reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        except (RedisError, OSError, TimeoutError) as exc:
            error = exc
        else:
            return SlotMap(_parse(reply, host))
        finally:
            await client.aclose()
    raise error


def _parse(reply: Any, asked_host: str) -> list[tuple[int, int, Address]]:
    """Raises ValueError (or IndexError, TypeError) for a reply no cluster node would give."""
    ranges = []
    for start, end, master, *_ in reply:
        endpoint = master[0]
        # NULL (``cluster-preferred-endpoint-type unknown-endpoint``), empty or "?": the node
        # that answered, on the port given (Redis 7 documents all three).
        if endpoint is None or endpoint in (b"", b"?", ""):
            host = asked_host
        else:
            host = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)
        first, last, port = int(start), int(end), int(master[1])
        if not (0 <= first <= last < SLOTS and 0 < port < 65536):
            raise ValueError(f"CLUSTER SLOTS names slots {first}-{last} on port {port}")
        ranges.append((first, last, (host, port)))
    return ranges
