"""Asking the sentinels where the master is, for Sentinel mode (gateway/topology/modes.py).

redis-py's ``Sentinel`` takes the first sentinel that names a healthy master. Just after a failover
a sentinel that has not yet heard of it (they tell each other every 2 s) still names the old master,
which, if it is alive, is a master for some seconds more before the sentinels demote it: writes there
are lost, and messages published to the new master never reach a subscriber there. So every sentinel
is asked, and the answer with the highest configuration epoch wins (the epoch a failover bumps).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.asyncio.sentinel import Sentinel as _AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as _AsyncSentinelPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel as _SyncSentinel

Address = tuple[str, int]
# For the connections to the sentinels themselves: a sentinel that does not answer within a second
# is left out (the others are asked at the same time), and not asked again: redis-py's clients
# otherwise retry three times with back-off, which made one dead sentinel cost every connect ~4 s.
_SENTINEL_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}


# What one sentinel's answer may raise besides a Redis error: a peer on its address answering
# nonsense fails redis-py's parser (or ours) in any of these ways. It is left out, as a dead one.
_GARBAGE = (RedisError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError)


def _named(state: Any, check: Any, service_name: str) -> tuple[int, Address] | None:
    """(epoch, master) of a sentinel's answer that names a reachable master, or None."""
    try:
        if isinstance(state, dict) and check(state, service_name):
            return int(state.get("config-epoch", 0)), (str(state["ip"]), int(state["port"]))
    except _GARBAGE:
        pass
    return None


def _newest(states: list[Any], check: Any, service_name: str) -> Address:
    valid = [named for s in states if (named := _named(s, check, service_name)) is not None]
    if not valid:
        raise MasterNotFoundError(f"no sentinel names a reachable master {service_name!r}")
    return max(valid, key=lambda named: named[0])[1]


class AsyncSentinels(_AsyncSentinel):
    """The sentinels, all asked at once; the master named with the highest epoch wins.
    ``node_options`` (credentials, TLS) are for the master's connections."""

    def __init__(self, sentinels: list[Address], **node_options: Any) -> None:
        options = {**_SENTINEL_OPTIONS, "retry": AsyncRetry(NoBackoff(), 0)}
        super().__init__(sentinels, sentinel_kwargs=options, **node_options)  # type: ignore[no-untyped-call]

    def master(self, service_name: str, **options: Any) -> aioredis.Redis:
        """A client of the master: every new connection asks the sentinels, and a connection that
        finds its server demoted fails (redis-py turns ``READONLY`` into a connection error), so a
        retry goes to the new master. Its pool waits for a free connection when
        ``max_connections`` are in use, like ``BlockingConnectionPool``."""
        client = self.master_for(service_name, connection_pool_class=BlockingSentinelPool, **options)
        return cast(aioredis.Redis, client)

    def pubsub_pool(self, service_name: str, **options: Any) -> _AsyncSentinelPool:
        """Where a pub/sub connection to the master comes from: each connect asks the sentinels."""
        options = {**self.connection_kwargs, **options, "is_master": True}
        return _AsyncSentinelPool(service_name, self, **options)  # type: ignore[no-untyped-call]

    async def discover_master(self, service_name: str) -> Address:
        async def ask(sentinel: Any) -> Any:
            try:
                return await sentinel.sentinel_master(service_name)
            except _GARBAGE as exc:  # down, does not know the name, or answers nonsense
                return exc

        states = await asyncio.gather(*(ask(sentinel) for sentinel in self.sentinels))
        return _newest(list(states), self.check_master_state, service_name)


class SyncSentinels(_SyncSentinel):
    """``AsyncSentinels`` for blocking clients (the publisher library, the CLI)."""

    def __init__(self, sentinels: list[Address], **node_options: Any) -> None:
        options = {**_SENTINEL_OPTIONS, "retry": Retry(NoBackoff(), 0)}
        super().__init__(sentinels, sentinel_kwargs=options, **node_options)  # type: ignore[no-untyped-call]

    def master(self, service_name: str, **options: Any) -> redis.Redis:
        return cast(redis.Redis, self.master_for(service_name, **options))  # type: ignore[no-untyped-call]

    def discover_master(self, service_name: str) -> Address:
        states: list[Any] = []
        for sentinel in self.sentinels:
            try:
                states.append(sentinel.sentinel_master(service_name))
            except _GARBAGE:
                continue
        return _newest(states, self.check_master_state, service_name)


class BlockingSentinelPool(_AsyncSentinelPool, BlockingConnectionPool):
    """A pool of connections to the master the sentinels name (each connect asks them) that,
    like the single-Redis command pool, waits for a free connection instead of failing."""
