"""Asking the sentinels for the master (gateway/topology/sentinels.py) with a real Sentinel set."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.sentinel import Sentinel as StockSentinel

from gateway.topology.sentinels import AsyncSentinels, SyncSentinels
from harness.garbage_redis import GarbageRedis
from harness.redis_sentinel import MASTER_NAME, RedisSentinelSet, Sentinel, running_sentinel
from harness.redis_server import RedisServer
from harness.waiting import wait_for


@pytest.fixture
def sentinel_set() -> Iterator[RedisSentinelSet]:
    with running_sentinel() as sentinels:
        yield sentinels


async def test_the_master_named_with_the_newest_epoch_wins_over_a_stale_sentinel(
    sentinel_set: RedisSentinelSet,
) -> None:
    """After a failover (epoch 1), a sentinel with an older view (epoch 0: here a lone one that
    names another live server under the same name) is asked first: redis-py's discovery takes
    its answer; asking every sentinel, the newer epoch wins."""
    new = sentinel_set.failover_and_wait()
    other = RedisServer()
    stale = Sentinel(other.port)
    try:
        other.start()
        stale.start()
        wait_for(lambda: _names(stale) == other.port, what="the lone sentinel to answer")
        addresses = [("127.0.0.1", stale.port)] + [("127.0.0.1", s.port) for s in sentinel_set.sentinels]
        with StockSentinel(addresses, socket_timeout=1) as stock:
            assert stock.discover_master(sentinel_set.master_name)[1] == other.port
        with SyncSentinels(addresses) as ours:
            assert ours.discover_master(sentinel_set.master_name) == ("127.0.0.1", new.port)
        async with AsyncSentinels(addresses) as ours_async:
            assert await ours_async.discover_master(sentinel_set.master_name) == ("127.0.0.1", new.port)
    finally:
        stale.close()
        other.close()


def _names(sentinel: Sentinel) -> int | None:
    try:
        return int(sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1])
    except redis.RedisError:
        return None


async def test_a_dead_or_silent_sentinel_costs_discovery_at_most_a_second(
    sentinel_set: RedisSentinelSet,
) -> None:
    """One sentinel killed, one paused (answers nothing): the third names the master within ~1 s."""
    _, port = sentinel_set.current_master()
    addresses = [("127.0.0.1", s.port) for s in sentinel_set.sentinels]
    sentinel_set.sentinels[0].kill()
    with sentinel_set.sentinels[1].paused():
        async with AsyncSentinels(addresses) as sentinels:
            started = time.monotonic()
            assert await sentinels.discover_master(sentinel_set.master_name) == ("127.0.0.1", port)
            assert time.monotonic() - started < 2.0  # redis-py's own retries take about 4 s
        with SyncSentinels(addresses) as sync_sentinels:
            started = time.monotonic()
            assert sync_sentinels.discover_master(sentinel_set.master_name) == ("127.0.0.1", port)
            # One after the other: the killed one refuses at once, the paused one times out.
            assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    "reply",
    [
        b":1\r\n",
        b"%1\r\n$4\r\nname\r\n$6\r\nmaster\r\n",
        b"%3\r\n$2\r\nip\r\n$1\r\nx\r\n$4\r\nport\r\n$2\r\nno\r\n$5\r\nflags\r\n$6\r\nmaster\r\n",
    ],
    ids=["an integer", "a state without flags", "a state missing fields"],
)
async def test_a_sentinel_that_answers_garbage_is_left_out(
    sentinel_set: RedisSentinelSet, reply: bytes
) -> None:
    """A peer on a sentinel's address answering every command with nonsense costs discovery that
    one answer: the real sentinels still name the master (not an exception out of discovery)."""
    _, port = sentinel_set.current_master()
    async with GarbageRedis(reply) as garbage:
        addresses = [("127.0.0.1", garbage.port)] + [("127.0.0.1", s.port) for s in sentinel_set.sentinels]
        async with AsyncSentinels(addresses) as sentinels:
            assert await sentinels.discover_master(sentinel_set.master_name) == ("127.0.0.1", port)
        assert garbage.commands > 0
