"""A history that moved to another server forks: the publish script starts a new epoch that goes
on from the offset the new server holds, and the reader maps positions of the old epoch onto it
up to that offset. On a real master and replica (a promotion), a real restart from disk, and for
the bounds, meta hashes a test rewrites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.history.position import Position, parse_position
from gateway.history.reader import HistoryReader, Reading
from gateway.publishing.publisher import Publisher
from harness.redis_replica import ReplicatedPair, replicated_pair
from harness.redis_server import RedisServer


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    with replicated_pair() as pair:
        yield pair


def _publish(url: str, user: str, *data: str) -> list[Position]:
    publisher = Publisher(url)
    try:
        positions = [parse_position(publisher.publish(user, item).position or "") for item in data]
    finally:
        publisher.close()
    assert all(positions)
    return [p for p in positions if p is not None]


@pytest.fixture
async def reader_of(pair: ReplicatedPair) -> AsyncIterator[HistoryReader]:
    client = aioredis.Redis.from_url(pair.replica.url)
    yield HistoryReader(client, "ws", 100)
    await client.aclose()


async def test_a_replica_promoted_without_the_last_entries_forks_where_its_history_ends(
    pair: ReplicatedPair, reader_of: HistoryReader, user: str
) -> None:
    """m1-m3 replicated, m4-m5 not: the promoted replica's next publish opens a new epoch at
    offset 4; old positions up to 3 read on, past 3 (lost entries) read from 3."""
    old = _publish(pair.master.url, user, "m1", "m2", "m3")
    pair.settle()
    pair.cut_replication()
    old += _publish(pair.master.url, user, "m4", "m5")
    pair.promote()
    (n4, n5) = _publish(pair.replica.url, user, "n4", "n5")
    epoch = n4.epoch
    assert epoch != old[0].epoch and (n4.offset, n5.offset) == (4, 5)
    read = reader_of.read
    assert await read(user, old[0].epoch, 2) == Reading("ok", epoch, 5, [b"m3", b"n4", b"n5"])
    assert await read(user, old[0].epoch, 3) == Reading("ok", epoch, 5, [b"n4", b"n5"])
    assert await read(user, old[0].epoch, 5) == Reading("ok", epoch, 5, [b"n4", b"n5"])
    assert await read(user, epoch, 4) == Reading("ok", epoch, 5, [b"n5"])


async def test_a_replica_promoted_with_every_entry_loses_no_position(
    pair: ReplicatedPair, reader_of: HistoryReader, user: str
) -> None:
    """A failover that lost nothing (the replica had it all): the new epoch shares every offset,
    so a client at the last message of the old one resumes with nothing missed."""
    (*_, last) = _publish(pair.master.url, user, "m1", "m2", "m3")
    pair.settle()
    pair.promote()
    # Until the promoted replica writes, the old epoch is the history's own.
    assert await reader_of.read(user, last.epoch, 3) == Reading("ok", last.epoch, 3, [])
    (n4,) = _publish(pair.replica.url, user, "n4")
    assert n4.epoch != last.epoch and n4.offset == 4
    assert await reader_of.read(user, last.epoch, 3) == Reading("ok", n4.epoch, 4, [b"n4"])


async def test_a_history_restarted_from_disk_forks(own_redis: RedisServer, user: str) -> None:
    """A restart from an RDB file gives the server a new replication id: what was written after
    the file was saved is lost, and its offsets must not come back in the same epoch."""
    (saved,) = _publish(own_redis.url, user, "saved")
    with own_redis.client() as client:
        client.save()
    (lost,) = _publish(own_redis.url, user, "lost")
    own_redis.kill()
    own_redis.start()
    (after,) = _publish(own_redis.url, user, "after")
    assert after.offset == lost.offset and after.epoch != saved.epoch
    client = aioredis.Redis.from_url(own_redis.url)
    reader = HistoryReader(client, "ws", 100)
    assert await reader.read(user, saved.epoch, lost.offset) == Reading("ok", after.epoch, 2, [b"after"])
    await client.aclose()


async def test_forks_are_bounded_and_read_through_every_later_one(
    redis_server: RedisServer, user: str
) -> None:
    """Each publish after the recorded server changed forks; four forks are kept. A position of
    a kept epoch is shared up to the smallest offset of its fork and those after it."""
    meta = keys.history_meta_key("ws", user)
    epochs = []
    with redis_server.client() as client:
        for n in range(6):
            (position,) = _publish(redis_server.url, user, f"m{n}")
            epochs.append(position.epoch)
            client.hset(meta, "node", "another-server")  # as if the history had moved
        assert len(set(epochs)) == 6
        forks = client.hget(meta, "forks").decode().split()
        assert forks == [epochs[1], "2", epochs[2], "3", epochs[3], "4", epochs[4], "5"]
        # A history that forked at 5 from an epoch that had forked at 3 (as when a replica
        # that lacked the first fork's later entries is promoted in turn).
        client.hset(meta, "forks", f"{epochs[1]} 5 {epochs[2]} 3")
    client_async = aioredis.Redis.from_url(redis_server.url)
    read = HistoryReader(client_async, "ws", 100).read
    current = epochs[5]
    assert await read(user, epochs[1], 5) == Reading("ok", current, 6, [b"m3", b"m4", b"m5"])
    assert await read(user, epochs[2], 2) == Reading("ok", current, 6, [b"m2", b"m3", b"m4", b"m5"])
    assert (await read(user, epochs[0], 1)).result == "epoch"  # its fork fell off the list
    await client_async.aclose()


async def test_a_history_written_before_servers_were_recorded_goes_on_in_its_epoch(
    redis_server: RedisServer, user: str
) -> None:
    (first,) = _publish(redis_server.url, user, "a")
    with redis_server.client() as client:
        client.hdel(keys.history_meta_key("ws", user), "node")
        (second,) = _publish(redis_server.url, user, "b")
        assert second == Position(first.epoch, first.offset + 1)
        assert client.hget(keys.history_meta_key("ws", user), "node")
