"""Gap fills after a failover whose promoted replica lacked the newest history: the offset went
back (what is published next must not be dropped as a copy, also when the gap fill read the old
master and found nothing missed: a real promotion, whose history forks), or the whole history was
lost and began again (what the new one holds must be delivered)."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway import keys
from gateway.broker import BrokerSetup
from gateway.broker.redis import RedisBroker
from gateway.history.gap import GapFiller
from gateway.history.reader import HistoryReader
from gateway.hub import Hub
from gateway.publishing.publisher import Publisher
from harness.fault_proxy import Fault, FaultProxy
from harness.outbox import Outbox
from harness.redis_replica import replicated_pair
from harness.redis_server import RedisServer, command_calls
from harness.waiting import eventually, in_thread


async def _now(value: object) -> object:
    return value


async def test_messages_after_a_history_that_went_back_are_delivered(
    own_redis: RedisServer, user: str
) -> None:
    """Offsets 1-5 delivered; the history comes back holding 1-3 (as on a replica promoted before
    it got 4 and 5); the next publishes take offsets 4 and 5 again and reach the socket."""
    client = aioredis.Redis.from_url(own_redis.url)
    hub = Hub()
    gap = GapFiller(hub, HistoryReader(client, "ws", 100))
    broker = RedisBroker(
        own_redis.url,
        client,
        BrokerSetup("ws", f"test-{user}", hub.deliver, hub.user_ids, 1.0, gap.resubscribed),
    )
    broker.start()
    publisher = Publisher(own_redis.url)
    try:
        await eventually(lambda: _now(broker.ready), what="the broker")
        socket = Outbox()
        hub.add(user, socket)
        await broker.subscribe(user)
        for n in range(1, 6):
            publisher.publish(user, f"m{n}")
        await eventually(lambda: _now(len(socket.frames) == 5), what="five messages")
        # The promoted replica's history: entries 1-3, offset 3, the same epoch.
        sync = own_redis.client()
        history, meta = keys.history_key("ws", user), keys.history_meta_key("ws", user)
        entries = sync.xrange(history)[:3]
        sync.delete(history)
        for entry_id, fields in entries:
            sync.xadd(history, fields, id=entry_id)
        sync.hset(meta, "offset", 3)
        sync.client_kill_filter(_type="pubsub")
        await eventually(lambda: _now(not broker.ready), what="the connection to drop")
        await eventually(lambda: _now(broker.ready), timeout=10, what="a new connection")
        await eventually(
            in_thread(lambda: dict(sync.pubsub_numsub(f"ws:{user}"))[f"ws:{user}".encode()] == 1),
            what="resubscribed",
        )
        publisher.publish(user, "after")
        await eventually(
            lambda: _now(socket.frames[-1:] == [b"after"]), what="the message after the failover"
        )
        sync.close()
    finally:
        publisher.close()
        await broker.stop()
        await gap.stop()
        await client.aclose()


async def test_a_history_that_began_again_while_the_worker_was_deaf_is_delivered(
    own_redis: RedisServer, user: str
) -> None:
    """The history is lost (as when a replica is promoted before it got the user's first
    entries) and three messages start a new one while the worker's pub/sub connection is gone:
    the gap fill delivers them, in order, before what follows."""
    client = aioredis.Redis.from_url(own_redis.url)
    hub = Hub()
    gap = GapFiller(hub, HistoryReader(client, "ws", 100))
    broker = RedisBroker(
        own_redis.url,
        client,
        BrokerSetup("ws", f"test-{user}", hub.deliver, hub.user_ids, 1.0, gap.resubscribed),
    )
    broker.start()
    publisher = Publisher(own_redis.url)
    sync = own_redis.client()
    try:
        await eventually(lambda: _now(broker.ready), what="the broker")
        socket = Outbox()
        hub.add(user, socket)
        await broker.subscribe(user)
        for n in range(1, 3):
            publisher.publish(user, f"m{n}")
        await eventually(lambda: _now(len(socket.frames) == 2), what="two messages")
        sync.delete(keys.history_key("ws", user), keys.history_meta_key("ws", user))
        # Without yielding to the loop: the worker cannot subscribe again before these.
        sync.client_kill_filter(_type="pubsub")
        for n in range(1, 4):
            publisher.publish(user, f"new{n}")
        await eventually(lambda: _now(broker.ready), timeout=10, what="a new connection")
        await eventually(
            in_thread(lambda: dict(sync.pubsub_numsub(f"ws:{user}"))[f"ws:{user}".encode()] == 1),
            what="resubscribed",
        )
        publisher.publish(user, "after")
        await eventually(lambda: _now(socket.frames[-1:] == [b"after"]), what="the message after")
        assert socket.frames == [b"m1", b"m2", b"new1", b"new2", b"new3", b"after"]
    finally:
        sync.close()
        publisher.close()
        await broker.stop()
        await gap.stop()
        await client.aclose()


async def test_live_messages_on_the_lost_offsets_are_delivered_while_the_old_master_still_answers(
    user: str,
) -> None:
    """Offsets 4 and 5 delivered from the master, never replicated; the replica is promoted and
    the pub/sub connection moves to it while commands still reach the old master (as for the
    seconds before Sentinel demotes it): the gap fill finds nothing missed there, and n4-n6,
    published on the new master at offsets 4 to 6, arrive live, and are delivered."""
    with replicated_pair() as pair, FaultProxy(pair.master.port) as proxy:
        client = aioredis.Redis.from_url(pair.master.url)
        hub = Hub()
        gap = GapFiller(hub, HistoryReader(client, "ws", 100))
        broker = RedisBroker(
            proxy.url,
            client,
            BrokerSetup("ws", f"test-{user}", hub.deliver, hub.user_ids, 1.0, gap.resubscribed),
        )
        broker.start()
        on_master, on_replica = Publisher(pair.master.url), Publisher(pair.replica.url)
        try:
            await eventually(lambda: _now(broker.ready), what="the broker")
            socket = Outbox()
            hub.add(user, socket)
            await broker.subscribe(user)
            for n in range(1, 4):
                on_master.publish(user, f"m{n}")
            pair.settle()
            pair.cut_replication()
            for n in (4, 5):
                on_master.publish(user, f"m{n}")
            await eventually(lambda: _now(len(socket.frames) == 5), what="five messages")
            with pair.master.client() as master:
                reads = command_calls(master)["evalsha"]
            pair.promote()
            proxy.upstream = ("127.0.0.1", pair.replica.port)
            proxy.inject(Fault.RESET, 1)
            with pair.replica.client() as replica:
                await eventually(
                    in_thread(lambda: dict(replica.pubsub_numsub(f"ws:{user}"))[f"ws:{user}".encode()] == 1),
                    timeout=10,
                    what="resubscribed on the new master",
                )
            with pair.master.client() as master:
                await eventually(
                    in_thread(lambda: command_calls(master)["evalsha"] > reads),
                    what="the gap fill to read the old master",
                )
            for n in range(4, 7):
                on_replica.publish(user, f"n{n}")
            await eventually(lambda: _now(socket.frames[-1:] == [b"n6"]), what="n6")
            assert socket.frames == [b"m1", b"m2", b"m3", b"m4", b"m5", b"n4", b"n5", b"n6"]
        finally:
            on_master.close()
            on_replica.close()
            await broker.stop()
            await gap.stop()
            await client.aclose()
