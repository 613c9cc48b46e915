"""A connection's groups in the hub and their channels in a real broker on a real Redis
(gateway/admission/groups.py): one batch of SUBSCRIBEs, rolled back whole when Redis cannot
confirm or the join is cancelled, and changed live by a refresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.admission.groups import Memberships
from gateway.broker import BrokerSetup, BrokerUnavailable
from gateway.broker.redis import RedisBroker
from gateway.hub import Hub
from harness.outbox import Outbox
from harness.redis_server import RedisServer
from harness.waiting import eventually


def _ignore(user_id: str, payload: bytes) -> None:
    pass


async def _ready(broker: RedisBroker) -> bool:
    return broker.ready


async def _broker(url: str, client: aioredis.Redis, hub: Hub, name: str) -> RedisBroker:
    broker = RedisBroker(url, client, BrokerSetup("ws", name, _ignore, hub.user_ids, 0.3))
    broker.start()
    return broker


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _subscribers(client: aioredis.Redis, *channels: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in dict(await client.pubsub_numsub(*channels)).items()}


async def _subscribe_calls(client: aioredis.Redis) -> int:
    return int((await client.info("commandstats")).get("cmdstat_subscribe", {}).get("calls", 0))


async def test_a_join_asks_for_every_new_channel_in_one_command_and_leave_drops_them(
    redis_server: RedisServer, client: aioredis.Redis, user: str
) -> None:
    hub = Hub()
    broker = await _broker(redis_server.url, client, hub, f"m-{user}")
    await eventually(lambda: _ready(broker))
    groups = tuple(f"{user}-g{i}" for i in range(5))
    channels = [f"ws:{{{g}" for g in groups]
    before = await _subscribe_calls(client)
    memberships = Memberships(hub, broker, Outbox())
    await memberships.join(groups)
    assert await _subscribe_calls(client) == before + 1
    assert await _subscribers(client, *channels) == dict.fromkeys(channels, 1)
    assert broker.channel_count == 6  # and the broadcast's
    memberships.leave()

    async def dropped() -> bool:
        return set((await _subscribers(client, *channels)).values()) == {0}

    await eventually(dropped, what="every group channel dropped")
    assert broker.channel_count == 0 and hub.user_ids() == []
    await broker.stop()


async def test_a_join_redis_cannot_confirm_is_rolled_back_whole(client: aioredis.Redis, user: str) -> None:
    hub = Hub()
    dead = await _broker("redis://127.0.0.1:1", client, hub, f"dead-{user}")
    memberships = Memberships(hub, dead, Outbox())
    with pytest.raises(BrokerUnavailable):
        await memberships.join(("a", "b"))
    assert dead.channel_count == 0 and hub.user_ids() == [] and memberships.held == []
    await dead.stop()


async def test_a_join_cancelled_while_redis_is_paused_leaves_no_channel_behind(
    own_redis: RedisServer, user: str
) -> None:
    """The client left while its admission waited: nothing is held once Redis answers again."""
    client = aioredis.Redis.from_url(own_redis.url)
    hub = Hub()
    broker = await _broker(own_redis.url, client, hub, f"c-{user}")
    await eventually(lambda: _ready(broker))
    memberships = Memberships(hub, broker, Outbox())
    with own_redis.paused():
        joining = asyncio.create_task(memberships.join(("a", "b", "c")))
        await eventually(lambda: _now(broker._subscriptions.unanswered), what="the SUBSCRIBE written")
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        assert hub.user_ids() == [] and broker.channel_count == 0
    channels = ["ws:{a", "ws:{b", "ws:{c", "ws:{*"]

    async def none_held() -> bool:
        return broker.ready and set((await _subscribers(client, *channels)).values()) == {0}

    await eventually(none_held, timeout=10, what="no group channel held after Redis answers")
    await broker.stop()
    await client.aclose()


async def _now(value: object) -> object:
    return value


async def test_a_change_leaves_the_old_groups_at_once_and_joins_the_new_ones(
    redis_server: RedisServer, client: aioredis.Redis, user: str
) -> None:
    hub = Hub()
    broker = await _broker(redis_server.url, client, hub, f"r-{user}")
    await eventually(lambda: _ready(broker))
    old, new = f"{user}-old", f"{user}-new"
    memberships = Memberships(hub, broker, Outbox())
    await memberships.join((old,))
    memberships.change((new,))
    assert "{" + old not in hub.user_ids() and "{" + new in hub.user_ids()

    async def switched() -> bool:
        counts = await _subscribers(client, f"ws:{{{old}", f"ws:{{{new}")
        return counts == {f"ws:{{{old}": 0, f"ws:{{{new}": 1}

    await eventually(switched, what="the old channel dropped and the new one held")
    memberships.leave()
    memberships.change((old,))  # a refresh racing the close: joins nothing
    assert hub.user_ids() == [] and memberships.held == []
    await broker.stop()
