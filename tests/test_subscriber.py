"""The subscriber against a real redis-server: reference counts, batching, confirmation, rollback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from gateway.subscriber import Subscriber, SubscriberUnavailable
from harness.redis_server import RedisServer
from harness.waiting import eventually


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()

    def __call__(self, user_id: str, payload: bytes) -> None:
        self.messages.append((user_id, payload))
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def commands(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
async def subscriber(
    redis_server: RedisServer, commands: aioredis.Redis, inbox: Inbox, user: str
) -> AsyncIterator[Subscriber]:
    sub = Subscriber(redis_server.url, "ws", f"test-{user}", commands, inbox, probe_interval=1.0)
    sub.start()
    await eventually(_async(lambda: sub.ready), what="the subscriber to be ready")
    yield sub
    await sub.stop()


async def _subscribers(commands: aioredis.Redis, channel: str) -> int:
    return int(dict(await commands.pubsub_numsub(channel))[channel.encode()])


async def _unsubscribed(commands: aioredis.Redis, *users: str) -> bool:
    counts = dict(await commands.pubsub_numsub(*(f"ws:{u}" for u in users)))
    return not any(counts.values())


def _async(condition: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return condition()

    return check


async def _calls(commands: aioredis.Redis, command: str) -> int:
    stats = await commands.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_first_connection_subscribes_and_last_unsubscribes(
    subscriber: Subscriber, commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """SUBSCRIBE on the first reference, UNSUBSCRIBE only after the last one is gone."""
    await subscriber.subscribe(user)
    assert await _subscribers(commands, f"ws:{user}") == 1
    await subscriber.subscribe(user)
    subscriber.unsubscribe(user)
    await commands.publish(f"ws:{user}", b"still here")
    await inbox.wait_for(1)
    assert inbox.messages == [(user, b"still here")]
    subscriber.unsubscribe(user)
    await eventually(lambda: _unsubscribed(commands, user), timeout=2, what="the channel to be dropped")
    assert subscriber.user_count == 0


async def test_subscribes_issued_in_one_tick_go_out_as_one_command(
    subscriber: Subscriber, commands: aioredis.Redis, user: str
) -> None:
    """100 users admitted at once cost one SUBSCRIBE, and each waits for Redis's confirmation."""
    before = await _calls(commands, "subscribe")
    users = [f"{user}-{i}" for i in range(100)]
    await asyncio.gather(*(subscriber.subscribe(u) for u in users))
    assert await _calls(commands, "subscribe") - before == 1
    counts = dict(await commands.pubsub_numsub(*(f"ws:{u}" for u in users)))
    assert set(counts.values()) == {1}
    before = await _calls(commands, "unsubscribe")
    for u in users:
        subscriber.unsubscribe(u)
    await eventually(lambda: _unsubscribed(commands, *users), timeout=2, what="100 channels to be dropped")
    assert await _calls(commands, "unsubscribe") - before == 1


async def test_leave_and_return_in_one_tick_keeps_the_subscription(
    subscriber: Subscriber, commands: aioredis.Redis, user: str
) -> None:
    """The last connection leaving and a new one arriving before any write cost no command."""
    await subscriber.subscribe(user)
    before = await _calls(commands, "subscribe") + await _calls(commands, "unsubscribe")
    subscriber.unsubscribe(user)
    await subscriber.subscribe(user)
    await asyncio.sleep(0)  # let the writer run, if it (wrongly) had anything to write
    assert await _calls(commands, "subscribe") + await _calls(commands, "unsubscribe") == before
    assert await _subscribers(commands, f"ws:{user}") == 1
    subscriber.unsubscribe(user)


async def test_a_cancelled_subscribe_rolls_back_its_reference(
    subscriber: Subscriber, commands: aioredis.Redis, user: str
) -> None:
    """A connection that goes away while waiting for Redis leaves no subscription behind."""
    task = asyncio.create_task(subscriber.subscribe(user))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert subscriber.user_count == 0
    await eventually(lambda: _unsubscribed(commands, user), timeout=2, what="the channel to be dropped")


async def test_reader_lives_with_zero_users_and_delivers_after(
    subscriber: Subscriber, commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """With nothing subscribed the reader still runs (control channel); a later user gets messages."""
    probes = await _calls(commands, "publish")

    async def probed_twice() -> bool:
        return await _calls(commands, "publish") >= probes + 2

    # A second probe goes out only after the first came back through the reader.
    await eventually(probed_twice, what="two probe round trips")
    assert subscriber.ready
    await subscriber.subscribe(user)
    await commands.publish(f"ws:{user}", b"x")
    await inbox.wait_for(1)
    subscriber.unsubscribe(user)


async def test_subscribe_fails_closed_while_redis_is_down(
    commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """No connection to Redis: subscribe raises at once instead of admitting a deaf socket."""
    dead = Subscriber("redis://127.0.0.1:1", "ws", f"dead-{user}", commands, inbox, probe_interval=1.0)
    dead.start()
    with pytest.raises(SubscriberUnavailable):
        await dead.subscribe(user)
    assert dead.user_count == 0
    await dead.stop()


async def test_a_killed_pubsub_connection_is_replaced_and_resubscribed(
    subscriber: Subscriber, commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """CLIENT KILL of the pub/sub connection: it reconnects and re-subscribes its users."""
    await subscriber.subscribe(user)
    killed = await commands.client_kill_filter(_type="pubsub", skipme=True)
    assert killed >= 1

    async def resubscribed() -> bool:
        return subscriber.ready and await _subscribers(commands, f"ws:{user}") == 1

    await eventually(resubscribed, what="the user's channel to be subscribed again")
    await commands.publish(f"ws:{user}", b"after")
    await inbox.wait_for(1)
    assert inbox.messages[-1] == (user, b"after")
    subscriber.unsubscribe(user)
