"""RedisBroker against a real redis-server: first/last from the hub, batching, confirmation, rollback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.client import Monitor

from gateway.admission import subscription
from gateway.broker import BrokerSetup, BrokerUnavailable
from gateway.broker.redis import RedisBroker
from gateway.hub import Hub
from harness.outbox import Outbox
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


class Local:
    """A worker's hub and broker, joined as admission joins them (gateway/admission/subscription.py)."""

    def __init__(self, hub: Hub, broker: RedisBroker) -> None:
        self.hub = hub
        self.broker = broker

    async def join(self, user_id: str) -> Outbox:
        socket = Outbox()
        await subscription.join(self.hub, self.broker, user_id, socket)
        return socket

    def leave(self, user_id: str, socket: Outbox) -> None:
        subscription.leave(self.hub, self.broker, user_id, socket)


@pytest.fixture
async def local(
    redis_server: RedisServer, commands: aioredis.Redis, inbox: Inbox, user: str
) -> AsyncIterator[Local]:
    hub = Hub()
    broker = RedisBroker(
        redis_server.url, commands, BrokerSetup("ws", f"test-{user}", inbox, hub.user_ids, 1.0)
    )
    broker.start()
    await eventually(_async(lambda: broker.ready), what="the broker to be ready")
    yield Local(hub, broker)
    await broker.stop()


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
    local: Local, commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """SUBSCRIBE on the hub's first connection, UNSUBSCRIBE only after its last one is gone."""
    first = await local.join(user)
    assert await _subscribers(commands, f"ws:{user}") == 1
    second = await local.join(user)
    local.leave(user, first)
    await commands.publish(f"ws:{user}", b"still here")
    await inbox.wait_for(1)
    assert inbox.messages == [(user, b"still here")]
    assert local.broker.channel_count == 1
    local.leave(user, second)
    await eventually(lambda: _unsubscribed(commands, user), timeout=2, what="the channel to be dropped")
    assert local.broker.channel_count == 0


async def test_subscribes_issued_in_one_tick_go_out_as_one_command(
    local: Local, commands: aioredis.Redis, user: str
) -> None:
    """100 users admitted at once cost one SUBSCRIBE, and each waits for Redis's confirmation."""
    before = await _calls(commands, "subscribe")
    users = [f"{user}-{i}" for i in range(100)]
    sockets = await asyncio.gather(*(local.join(u) for u in users))
    assert await _calls(commands, "subscribe") - before == 1
    counts = dict(await commands.pubsub_numsub(*(f"ws:{u}" for u in users)))
    assert set(counts.values()) == {1}
    before = await _calls(commands, "unsubscribe")
    for u, socket in zip(users, sockets, strict=True):
        local.leave(u, socket)
    await eventually(lambda: _unsubscribed(commands, *users), timeout=2, what="100 channels to be dropped")
    assert await _calls(commands, "unsubscribe") - before == 1


async def test_leave_and_return_in_one_tick_keeps_the_subscription(
    local: Local, commands: aioredis.Redis, user: str
) -> None:
    """The last connection leaving and a new one arriving before any write cost no command: the
    next thing the broker writes (another user's SUBSCRIBE, seen by MONITOR) names only that user."""
    socket = await local.join(user)
    async with commands.monitor() as monitor:
        local.leave(user, socket)
        socket = await local.join(user)
        other = await local.join(f"{user}-next")
        written = await _ran_until(monitor, f"ws:{user}-next")
    assert [args for args in written if f"ws:{user}" in args] == []
    assert await _subscribers(commands, f"ws:{user}") == 1
    local.leave(user, socket)
    local.leave(f"{user}-next", other)


async def _ran_until(monitor: Monitor, channel: str) -> list[list[str]]:
    """The commands Redis ran (as MONITOR reports them), up to the first one naming ``channel``."""
    ran: list[list[str]] = []
    async with asyncio.timeout(5):
        while not ran or channel not in ran[-1]:
            ran.append((await monitor.next_command())["command"].split(" "))
    return ran


@contextlib.asynccontextmanager
async def _local_on(
    server: RedisServer, inbox: Inbox, user: str, probe_interval: float
) -> AsyncIterator[Local]:
    """A hub and a broker on a Redis of the test's own (one that gets paused)."""
    client = aioredis.Redis.from_url(server.url)
    hub = Hub()
    broker = RedisBroker(
        server.url, client, BrokerSetup("ws", f"own-{user}", inbox, hub.user_ids, probe_interval)
    )
    broker.start()
    try:
        await eventually(_async(lambda: broker.ready), what="the broker to be ready")
        yield Local(hub, broker)
    finally:
        await broker.stop()
        await client.aclose()


def _written(local: Local) -> Callable[[], Awaitable[object]]:
    # The broker's own record of SUBSCRIBEs written and not yet confirmed.
    return _async(lambda: local.broker._subscriptions.unanswered)


async def test_leave_and_return_while_the_subscribe_is_in_flight_waits_for_it(
    own_redis: RedisServer, inbox: Inbox, user: str
) -> None:
    """The last connection leaves while its SUBSCRIBE is in flight and a new one arrives before the
    UNSUBSCRIBE is written: no UNSUBSCRIBE goes out, and the new one waits for the same
    confirmation and then receives."""
    async with _local_on(own_redis, inbox, user, probe_interval=1.0) as local:
        with own_redis.paused():
            leaving = asyncio.create_task(local.join(user))
            await eventually(_written(local), what="the SUBSCRIBE to be written")
            leaving.cancel()
            returning = asyncio.create_task(local.join(user))
            with pytest.raises(asyncio.CancelledError):
                await leaving
            assert not returning.done()
        socket = await returning
        client = aioredis.Redis.from_url(own_redis.url)
        assert await _calls(client, "unsubscribe") == 0
        assert await _subscribers(client, f"ws:{user}") == 1
        await client.publish(f"ws:{user}", b"kept")
        await inbox.wait_for(1)
        assert (local.hub.user_count, local.broker.channel_count) == (1, 1)
        local.leave(user, socket)
        await eventually(lambda: _unsubscribed(client, user), timeout=2, what="the channel to be dropped")
        await client.aclose()


async def test_a_later_connection_shares_the_first_ones_wait(
    own_redis: RedisServer, inbox: Inbox, user: str
) -> None:
    """A second connection of a user whose SUBSCRIBE is in flight returns only once Redis has
    confirmed it, and the first one cancelled meanwhile does not cancel that wait."""
    async with _local_on(own_redis, inbox, user, probe_interval=1.0) as local:
        with own_redis.paused():
            first = asyncio.create_task(local.join(user))
            await eventually(_written(local), what="the SUBSCRIBE to be written")
            second = asyncio.create_task(local.join(user))
            await asyncio.sleep(0.1)  # room for a wrong early return
            assert not second.done()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
        socket = await second
        client = aioredis.Redis.from_url(own_redis.url)
        assert await _subscribers(client, f"ws:{user}") == 1
        assert await _calls(client, "subscribe") == 2  # the control channel's, then the user's
        local.leave(user, socket)
        await eventually(lambda: _unsubscribed(client, user), timeout=2, what="the channel to be dropped")
        assert local.broker.channel_count == local.hub.user_count == 0
        await client.aclose()


async def test_a_subscription_lost_before_confirmation_refuses_every_waiter_and_resubscribes_the_rest(
    own_redis: RedisServer, inbox: Inbox, user: str
) -> None:
    """Redis goes deaf with a SUBSCRIBE in flight: the probe replaces the connection, both waiting
    connections of the user are refused and leave the hub, and the new connection subscribes
    exactly the users the hub still holds."""
    staying = f"{user}-staying"
    async with _local_on(own_redis, inbox, user, probe_interval=0.3) as local:
        socket = await local.join(staying)
        with own_redis.paused():
            waiting = [asyncio.create_task(local.join(user)) for _ in range(2)]
            await eventually(_written(local), what="the SUBSCRIBE to be written")
            results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 10)
            assert [type(r) for r in results] == [BrokerUnavailable, BrokerUnavailable]
            assert local.hub.user_ids() == [staying]
            assert local.broker.channel_count == 1
        client = aioredis.Redis.from_url(own_redis.url)

        async def resubscribed() -> bool:
            counts = dict(await client.pubsub_numsub(f"ws:{staying}", f"ws:{user}"))
            return local.broker.ready and counts == {f"ws:{staying}".encode(): 1, f"ws:{user}".encode(): 0}

        await eventually(resubscribed, timeout=10, what="only the staying user to be subscribed again")
        await client.publish(f"ws:{staying}", b"after")
        await inbox.wait_for(1)
        assert inbox.messages == [(staying, b"after")]
        local.leave(staying, socket)
        await client.aclose()


async def test_a_cancelled_subscribe_rolls_back_its_reference(
    local: Local, commands: aioredis.Redis, user: str
) -> None:
    """A connection that goes away while waiting for Redis leaves no subscription behind."""
    task = asyncio.create_task(local.join(user))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert local.broker.channel_count == local.hub.user_count == 0
    await eventually(lambda: _unsubscribed(commands, user), timeout=2, what="the channel to be dropped")


async def test_reader_lives_with_zero_users_and_delivers_after(
    local: Local, commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """With nothing subscribed the reader still runs (control channel); a later user gets messages."""
    probes = await _calls(commands, "publish")

    async def probed_twice() -> bool:
        return await _calls(commands, "publish") >= probes + 2

    # A second probe goes out only after the first came back through the reader.
    await eventually(probed_twice, what="two probe round trips")
    assert local.broker.ready
    socket = await local.join(user)
    await commands.publish(f"ws:{user}", b"x")
    await inbox.wait_for(1)
    local.leave(user, socket)


async def test_subscribe_fails_closed_while_redis_is_down(
    commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """No connection to Redis: subscribe raises at once instead of admitting a deaf socket."""
    hub = Hub()
    dead = RedisBroker(
        "redis://127.0.0.1:1", commands, BrokerSetup("ws", f"dead-{user}", inbox, hub.user_ids, 1.0)
    )
    dead.start()
    with pytest.raises(BrokerUnavailable):
        await Local(hub, dead).join(user)
    assert dead.channel_count == hub.user_count == 0
    await dead.stop()


async def test_a_killed_pubsub_connection_is_replaced_and_resubscribed(
    local: Local, commands: aioredis.Redis, inbox: Inbox, user: str
) -> None:
    """CLIENT KILL of the pub/sub connection: it reconnects and re-subscribes the hub's users."""
    socket = await local.join(user)
    killed = await commands.client_kill_filter(_type="pubsub", skipme=True)
    assert killed >= 1

    async def resubscribed() -> bool:
        return local.broker.ready and await _subscribers(commands, f"ws:{user}") == 1

    await eventually(resubscribed, what="the user's channel to be subscribed again")
    await commands.publish(f"ws:{user}", b"after")
    await inbox.wait_for(1)
    assert inbox.messages[-1] == (user, b"after")
    local.leave(user, socket)


async def test_resubscribed_users_are_reported_once_redis_confirms_them_again(
    own_redis: RedisServer, user: str
) -> None:
    """The gap fill's hook: not for a first subscription, once per user after a reconnect, and
    only once the channel is confirmed (a message published then reaches the hub)."""
    commands = aioredis.Redis.from_url(own_redis.url)
    hub = Hub()
    received: list[tuple[str, bytes]] = []
    reported: list[tuple[str, int]] = []
    broker = RedisBroker(
        own_redis.url,
        commands,
        BrokerSetup(
            "ws",
            f"test-{user}",
            lambda u, p: received.append((u, p)),
            hub.user_ids,
            probe_interval=1.0,
            on_resubscribed=lambda u: reported.append((u, len(received))),
        ),
    )
    broker.start()
    await eventually(_async(lambda: broker.ready), what="the broker to be ready")
    local = Local(hub, broker)
    socket = await local.join(user)
    await commands.publish(f"ws:{user}", b"before")
    await eventually(_async(lambda: len(received) == 1))
    assert reported == []
    assert await commands.client_kill_filter(_type="pubsub") >= 1
    await eventually(_async(lambda: reported), what="the hook to run after the reconnect")
    assert reported == [(user, 1)]
    assert await _subscribers(commands, f"ws:{user}") == 1
    local.leave(user, socket)
    await broker.stop()
    await commands.aclose()


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_malformed_history_frame_costs_the_session_nothing(
    redis_server: RedisServer, commands: aioredis.Redis, user: str
) -> None:
    """A raw PUBLISH of a history frame whose offset has 5,000 digits (``int()`` raises on it),
    then 50 plain messages: all 50 arrive over the same pub/sub session."""
    hub = Hub()
    broker = RedisBroker(
        redis_server.url, commands, BrokerSetup("ws", f"test-{user}", hub.deliver, hub.user_ids, 1.0)
    )
    broker.start()
    try:
        await eventually(_async(lambda: broker.ready), what="the broker to be ready")
        socket = Outbox()
        await Local(hub, broker).join(user)  # the channel is subscribed ...
        hub.add(user, socket)  # ... and this socket records what the user gets
        reconnects = _sample("websocket_redis_reconnects_total")
        await commands.publish(f"ws:{user}", b"\xffHe " + b"9" * 5000 + b" x")
        for i in range(50):
            await commands.publish(f"ws:{user}", b"%d" % i)
        await eventually(_async(lambda: len(socket.frames) == 50), what="all 50 plain messages")
        assert socket.frames == [b"%d" % i for i in range(50)]
        assert _sample("websocket_redis_reconnects_total") == reconnects
    finally:
        await broker.stop()


class Poisoned(Inbox):
    """A handler with a bug that one payload triggers."""

    def __call__(self, user_id: str, payload: bytes) -> None:
        if payload == b"poison":
            raise RecursionError("a bug in the handler")
        super().__call__(user_id, payload)


async def test_a_message_whose_handler_raises_is_dropped_counted_and_the_session_kept(
    redis_server: RedisServer, commands: aioredis.Redis, user: str
) -> None:
    """Whatever the exception, it costs that one message: counted, and the next ones arrive on
    the same connection (no reconnect, so nothing published meanwhile is lost)."""
    inbox = Poisoned()
    hub = Hub()
    broker = RedisBroker(
        redis_server.url, commands, BrokerSetup("ws", f"test-{user}", inbox, hub.user_ids, 1.0)
    )
    broker.start()
    try:
        await eventually(_async(lambda: broker.ready), what="the broker to be ready")
        await Local(hub, broker).join(user)
        reconnects = _sample("websocket_redis_reconnects_total")
        failed = _sample("websocket_messages_dropped_total", {"reason": "handler_failed"})
        for payload in (b"before", b"poison", b"after", b"poison", b"last"):
            await commands.publish(f"ws:{user}", payload)
        await inbox.wait_for(3)
        assert [p for _, p in inbox.messages] == [b"before", b"after", b"last"]
        assert _sample("websocket_messages_dropped_total", {"reason": "handler_failed"}) == failed + 2
        assert _sample("websocket_redis_reconnects_total") == reconnects
    finally:
        await broker.stop()
