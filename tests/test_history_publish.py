"""Publishing with history: the publish script against a real redis-server."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from gateway import keys, wire
from gateway.history.reader import COUNT, HistoryReader, Reading
from gateway.publishing.publisher import AsyncPublisher, Publisher
from harness.redis_server import RedisServer
from harness.waiting import eventually, wait_for


def _listen(server: RedisServer, channel: str) -> redis.client.PubSub:
    pubsub = server.client().pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def _epoch_offset(position: str | None) -> tuple[str, int]:
    assert position is not None
    offset, _, epoch = position.partition("-")
    return epoch, int(offset)


def test_publish_writes_history_and_publishes_the_history_message(
    redis_server: RedisServer, user: str
) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url)
    first = publisher.publish(user, {"n": 1})
    second = publisher.publish(user, "two")
    assert first == 1 and second == 1
    epoch, offset = _epoch_offset(first.position)
    assert _epoch_offset(second.position) == (epoch, offset + 1)
    received = [pubsub.get_message(timeout=5)["data"] for _ in range(2)]  # type: ignore[index]
    assert received == [
        wire.history_message(epoch, offset, b'{"n":1}'),
        wire.history_message(epoch, offset + 1, b"two"),
    ]
    client = redis_server.client()
    meta = client.hgetall(keys.history_meta_key("ws", user))
    assert meta[b"epoch"].decode() == epoch and int(meta[b"offset"]) == offset + 1
    assert client.xlen(keys.history_key("ws", user)) == 2
    # Both keys live no longer than the age cap (default 300 s).
    for key in (keys.history_key("ws", user), keys.history_meta_key("ws", user)):
        assert 0 < client.pttl(key) <= 300_000
    publisher.close()
    pubsub.close()


def test_keys_share_the_channel_hash_slot(user: str) -> None:
    for key in (keys.history_key("ws", user), keys.history_meta_key("ws", user)):
        assert key.startswith("{" + keys.user_channel("ws", user) + "}:")


def test_history_false_publishes_plainly(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url, history=False)
    result = publisher.publish(user, "plain")
    assert result == 1 and result.position is None
    assert pubsub.get_message(timeout=5)["data"] == b"plain"  # type: ignore[index]
    assert not redis_server.client().exists(keys.history_meta_key("ws", user))
    publisher.close()
    pubsub.close()


def test_history_is_chosen_per_call(redis_server: RedisServer, user: str) -> None:
    """One publisher mixes plain and recoverable messages: a call's history= overrides its own."""
    pubsub = _listen(redis_server, f"ws:{user}")
    with Publisher(redis_server.url) as publisher:
        plain = publisher.publish(user, "plain", history=False)
        kept = publisher.publish(user, "kept")
    with Publisher(redis_server.url, history=False) as plain_publisher:
        [recoverable] = plain_publisher.publish_many([(user, "recoverable")], history=True)
    assert plain == 1 and plain.position is None
    assert kept.position is not None and recoverable.position is not None
    received = [pubsub.get_message(timeout=5)["data"] for _ in range(3)]  # type: ignore[index]
    epoch, offset = _epoch_offset(kept.position)
    assert received == [
        b"plain",
        wire.history_message(epoch, offset, b"kept"),
        wire.history_message(epoch, offset + 1, b"recoverable"),
    ]
    entries = redis_server.client().xrange(keys.history_key("ws", user))
    assert [e[1][b"d"] for e in entries] == [b"kept", b"recoverable"]
    pubsub.close()


async def test_history_is_chosen_per_call_async(redis_server: RedisServer, user: str) -> None:
    async with AsyncPublisher(redis_server.url) as publisher:
        plain = await publisher.publish(user, "plain", history=False)
        [kept] = await publisher.publish_many([(user, "kept")], history=True)
        [also_plain] = await publisher.publish_many([(user, "also plain")], history=False)
    assert plain.position is None and also_plain.position is None and kept.position is not None
    assert redis_server.client().xlen(keys.history_key("ws", user)) == 1


def test_a_plain_call_on_a_replicated_publisher_is_refused(redis_server: RedisServer, user: str) -> None:
    """replicas=N promises a publish that survives a failover; a plain one cannot keep it."""
    with Publisher(redis_server.url, replicas=1) as publisher:
        with pytest.raises(ValueError, match="replicas needs history"):
            publisher.publish(user, "plain", history=False)


def test_the_length_cap_trims_the_oldest(redis_server: RedisServer, user: str) -> None:
    publisher = Publisher(redis_server.url, history_length=5)
    results = publisher.publish_many([(user, f"m{i}") for i in range(6)])
    offsets = [_epoch_offset(r.position)[1] for r in results]
    assert offsets == list(range(offsets[0], offsets[0] + 6))
    entries = redis_server.client().xrange(keys.history_key("ws", user))
    assert [e[1][b"d"] for e in entries] == [f"m{i}".encode() for i in range(1, 6)]
    publisher.close()


def test_a_lost_history_starts_a_new_epoch(redis_server: RedisServer, user: str) -> None:
    publisher = Publisher(redis_server.url, history_ttl=0.2)
    before = publisher.publish(user, "a")
    client = redis_server.client()
    wait_for(lambda: not client.exists(keys.history_meta_key("ws", user)), timeout=10)
    assert not client.exists(keys.history_key("ws", user))
    after = publisher.publish(user, "b")
    assert _epoch_offset(after.position)[0] != _epoch_offset(before.position)[0]
    assert _epoch_offset(after.position)[1] == 1
    publisher.close()


def test_the_script_is_loaded_again_after_a_script_flush(redis_server: RedisServer, user: str) -> None:
    publisher = Publisher(redis_server.url)
    publisher.publish(user, "a")
    redis_server.client().script_flush()
    assert _epoch_offset(publisher.publish(user, "b").position)[1] == 2
    publisher.close()


async def test_async_publish_many_keeps_order_per_user(redis_server: RedisServer, user: str) -> None:
    publisher = AsyncPublisher(redis_server.url)
    results = await publisher.publish_many([(user, i) for i in range(10)] + [(user + "-b", "x")])
    offsets = [_epoch_offset(r.position)[1] for r in results]
    assert offsets == [*range(1, 11), 1]
    await publisher.aclose()


def test_the_101st_message_trims_the_first(redis_server: RedisServer, user: str) -> None:
    publisher = Publisher(redis_server.url)
    publisher.publish_many([(user, i) for i in range(101)])
    entries = redis_server.client().xrange(keys.history_key("ws", user))
    assert len(entries) == 100 and entries[0][0] == b"2-0" and entries[-1][0] == b"101-0"
    publisher.close()


async def test_the_reader_refuses_entries_past_the_age_cap(redis_server: RedisServer, user: str) -> None:
    publisher = AsyncPublisher(redis_server.url)
    first = await publisher.publish(user, "old")
    await publisher.publish(user, "newer")
    epoch, offset = _epoch_offset(first.position)
    client = aioredis.Redis.from_url(redis_server.url)
    reader = HistoryReader(client, "ws", replay_cap=100)
    assert await reader.read(user, epoch, offset - 1) == Reading("ok", epoch, offset + 1, [b"old", b"newer"])
    # The age cap the publisher wrote, shrunk to 1 ms: the first missed entry is now too old.
    await client.hset(keys.history_meta_key("ws", user), "age", 1)

    async def expired() -> bool:
        return (await reader.read(user, epoch, offset - 1)).result == "expired"

    await eventually(expired, timeout=5)
    assert (await reader.read(user, epoch, offset + 1)) == Reading("ok", epoch, offset + 1, [])
    assert (await reader.read(user, epoch, offset + 2)).result == "future"
    assert (await reader.read(user, epoch + "x", offset)).result == "epoch"
    assert (await reader.read(user + "-nobody", epoch, offset)).result == "lost"
    await client.aclose()
    await publisher.aclose()


async def test_a_count_sends_no_data_and_a_read_through_it_leaves_out_what_came_after(
    redis_server: RedisServer, user: str
) -> None:
    """A resume of many sources counts first and reads up to the offset counted: a message
    published between the two arrives live, not in the replay; from a time, the same."""
    client = aioredis.Redis.from_url(redis_server.url)
    reader = HistoryReader(client, "ws", replay_cap=3)
    async with AsyncPublisher(redis_server.url) as publisher:
        first = await publisher.publish(user, "m1")
        for data in ("m2", "m3"):
            await publisher.publish(user, data)
        epoch, offset = _epoch_offset(first.position)
        gaps = [(user, epoch, offset), (user, "", 0), (user, epoch, offset - 1)]
        counts = await reader.read_many(gaps, [COUNT, COUNT, COUNT])
        assert counts == [
            Reading("ok", epoch, offset + 2, [], 2),
            Reading("ok", epoch, offset + 2, [], 3),
            Reading("ok", epoch, offset + 2, [], 3),
        ]
        await publisher.publish(user, "m4")
        more = await reader.read_many(gaps[:1], [COUNT])
        assert more[0].result == "ok" and more[0].counted == 3  # one more: still within the cap
        through = [str(offset + 2)] * 3
        read = await reader.read_many(gaps, through)
        assert [r.entries for r in read] == [[b"m2", b"m3"], [b"m1", b"m2", b"m3"], [b"m1", b"m2", b"m3"]]
        assert {r.offset for r in read} == {offset + 2}
        await publisher.publish(user, "m5")
        over = await reader.read_many(gaps[1:], [COUNT, COUNT])
        assert [(r.result, r.entries) for r in over] == [("too_long", []), ("too_long", [])]
    await client.aclose()
