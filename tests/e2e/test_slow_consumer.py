"""One client that stops reading costs nobody else anything, and is closed with 4008."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode

from gateway import keys
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.stalled_client import (
    StalledClient,
    masked_frame,
    server_holds_socket,
    server_read_everything,
    worker_rss_kib,
)
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

READERS = 50
MESSAGES = 10_000


@pytest.fixture
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1) as gw:
        yield gw


async def _run(
    gateway: Gateway, redis_url: str, readers: list[tuple[str, ClientConnection]], heavy: str
) -> list[float]:
    """Publish MESSAGES over the readers, and 16 MiB in 4 KiB frames to ``heavy``; reader latencies."""
    latencies: list[float] = []

    async def read(ws: ClientConnection, count: int) -> None:
        for _ in range(count):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            latencies.append((time.time() - frame["t"]) * 1000)

    per_reader = MESSAGES // len(readers)
    reading = [asyncio.create_task(read(ws, per_reader)) for _, ws in readers]
    publisher = aioredis.Redis.from_url(redis_url)
    padding = "x" * 4096
    for _ in range(per_reader):
        async with publisher.pipeline(transaction=False) as pipe:
            for user, _ws in readers:
                pipe.publish(f"ws:{user}", json.dumps({"t": time.time()}))
            # More than the kernel's socket buffers hold, so a stalled client's queue must overflow.
            for _ in range(20):
                pipe.publish(f"ws:{heavy}", json.dumps({"t": time.time(), "pad": padding}))
            await pipe.execute()
    await asyncio.gather(*reading)
    await publisher.aclose()
    return latencies


async def _baseline(
    gateway: Gateway, redis_url: str, readers: list[tuple[str, ClientConnection]], heavy: str
) -> list[float]:
    fast = await connect(f"{gateway.ws_url}?token={make_token(heavy)}", max_size=None)
    drained = asyncio.create_task(_discard(fast))
    latencies = await _run(gateway, redis_url, readers, heavy)
    await fast.close()
    await drained
    return latencies


async def _discard(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def test_a_stalled_client_is_closed_with_4008_and_others_keep_their_latency(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    readers = [
        (f"reader-{i}", await connect(f"{gateway.ws_url}?token={make_token(f'reader-{i}')}"))
        for i in range(READERS)
    ]
    # Closed whatever happens: sockets left open would fail a later test (ResourceWarning).
    stalled: StalledClient | None = None
    try:
        (worker,) = gateway.worker_pids()

        # Baselines before and after: the same traffic, the heavy user's client reading everything.
        # Bracketing the stalled run keeps a load change on the shared machine from looking like harm.
        first_baseline = await _baseline(gateway, redis_server.url, readers, "fast-1")
        rss_before = worker_rss_kib(worker)
        stalled = StalledClient(f"{gateway.ws_url}?token={make_token('stalled')}")
        with_stalled = await _run(gateway, redis_server.url, readers, heavy="stalled")
        rss_after = worker_rss_kib(worker)
        second_baseline = await _baseline(gateway, redis_server.url, readers, "fast-2")
        baseline = max(first_baseline, second_baseline, key=p99)

        assert len(first_baseline) == len(second_baseline) == len(with_stalled) == MESSAGES
        # Every reader got every message; the stalled client cost them at most a doubling of p99
        # (plus 5 ms of scheduling noise on a shared 2-core machine).
        assert p99(with_stalled) <= 2 * p99(baseline) + 5, (p99(baseline), p99(with_stalled))
        # It was ended as a slow consumer; it read nothing for longer than the close timeout after,
        # so the server reset its socket rather than wait for it to read its close frame.
        assert 'websocket_rejections_total{reason="slow_consumer"} 1.0' in gateway.get("/metrics")[1].decode()
        await eventually(
            in_thread(lambda: not server_holds_socket(gateway.port, stalled.port)),
            timeout=10,
            what="the stalled socket to go",
        )
        stalled.close()
        # The stalled socket's backlog is bounded by its queue (256 frames): no growth with the traffic.
        assert rss_after - rss_before < 32 * 1024, (rss_before, rss_after)
        assert all(ws.close_code is None for _, ws in readers)
    finally:
        if stalled is not None:
            stalled.close()
        await asyncio.gather(*(ws.close() for _, ws in readers))


def _user_gone(gateway: Gateway, redis_server: RedisServer, user: str) -> bool:
    """No hub entry, lease or subscription is left for ``user`` (the only user on the worker)."""
    (state,) = gateway.worker_states().values()
    client = redis_server.client()
    try:
        leases = client.hlen(keys.connections_key("ws", user))
        channel = keys.user_channel("ws", user)
        subscribers = dict(client.pubsub_numsub(channel))[channel.encode()]
    finally:
        client.close()
    return state["connections"] == state["users"] == state["subscriptions"] == leases == subscribers == 0


async def _publish_until_ended(gateway: Gateway, redis_url: str, user: str, frames: int = 200) -> None:
    """4 KiB frames to ``user`` in batches of ``frames`` until the worker holds no connection."""
    publisher = aioredis.Redis.from_url(redis_url)
    payload = json.dumps({"pad": "x" * 4096})
    try:
        for _ in range(100):
            async with publisher.pipeline(transaction=False) as pipe:
                for _ in range(frames):
                    pipe.publish(keys.user_channel("ws", user), payload)
                await pipe.execute()
            (state,) = (await asyncio.to_thread(gateway.worker_states)).values()
            if state["connections"] == 0:
                return
        raise AssertionError("the stalled clients were never ended")
    finally:
        await publisher.aclose()


async def test_slow_consumers_that_never_read_again_lose_their_sockets_and_places(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    """After 4008, a client that reads gets its close frame and reason; the server's sockets of
    clients that never read again are gone within seconds, and so are the user's lease and
    subscription (five such cycles held five descriptors for good)."""
    user = "stalled-thrice"
    url = f"{gateway.ws_url}?token={make_token(user)}"
    clients = [await asyncio.to_thread(StalledClient, url) for _ in range(3)]
    try:
        await _publish_until_ended(gateway, redis_server.url, user)
        assert await asyncio.to_thread(_user_gone, gateway, redis_server, user)
        # One client reads at once: the close frame, queued behind what it had not read, reaches it.
        close = await asyncio.to_thread(clients[0].close_frame)
        assert close is not None
        assert (close.code, close.reason) == (4008, "slow_consumer")
        # The others never read again: the server hangs up on them anyway.
        await eventually(
            in_thread(lambda: not any(server_holds_socket(gateway.port, c.port) for c in clients[1:])),
            timeout=15,
            what="the server to release the sockets of clients that do not read",
        )
    finally:
        for client in clients:
            client.close()


async def test_a_ping_timeout_frees_the_place_at_once(redis_server: RedisServer) -> None:
    """A peer that reads nothing (so never answers a ping) with frames backed up in its transport:
    the ping timeout ends the connection, its hub entry, lease and subscription go at once (not at
    the idle timeout), and its socket is gone within seconds."""
    user = "deaf-and-dumb"
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_PING_INTERVAL="1",
        WEBSOCKET_PING_TIMEOUT="1",
        WEBSOCKET_IDLE_TIMEOUT="300",
        WEBSOCKET_SEND_QUEUE_SIZE="100000",
    ) as gateway:
        client = await asyncio.to_thread(StalledClient, f"{gateway.ws_url}?token={make_token(user)}")
        try:
            publisher = aioredis.Redis.from_url(redis_server.url)
            async with publisher.pipeline(transaction=False) as pipe:
                # 8 MiB: more than the socket buffers (4 MiB), so the transport holds some.
                for _ in range(2000):
                    pipe.publish(keys.user_channel("ws", user), json.dumps({"pad": "x" * 4096}))
                await pipe.execute()
            await publisher.aclose()
            await eventually(
                in_thread(lambda: _user_gone(gateway, redis_server, user)), timeout=10, what="the place to go"
            )
            await eventually(
                in_thread(lambda: not server_holds_socket(gateway.port, client.port)),
                timeout=10,
                what="the server to release the socket",
            )
        finally:
            client.close()


async def test_a_client_that_does_not_read_gets_only_its_latest_pong(redis_server: RedisServer) -> None:
    """Pings from a client whose transport is backed up do not pile pongs up in memory: once it
    reads again it gets one pong, for its latest ping (RFC 6455 5.5.3), before what was queued."""
    user, sentinel_user = "pinging-stalled", "sentinel"
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_SEND_QUEUE_SIZE="100000",
        WEBSOCKET_CLIENT_MESSAGES_PER_SECOND="1000",
    ) as gateway:
        sentinel = await connect(f"{gateway.ws_url}?token={make_token(sentinel_user)}")
        client = await asyncio.to_thread(StalledClient, f"{gateway.ws_url}?token={make_token(user)}")
        try:
            # 8 MiB, more than the socket buffers hold (4 MiB), then a message to another user of
            # the worker: once that arrives, the stalled transport is full and paused.
            publisher = aioredis.Redis.from_url(redis_server.url)
            async with publisher.pipeline(transaction=False) as pipe:
                for _ in range(2000):
                    pipe.publish(keys.user_channel("ws", user), json.dumps({"pad": "x" * 4096}))
                pipe.publish(keys.user_channel("ws", sentinel_user), b"{}")
                await pipe.execute()
            await publisher.aclose()
            assert await asyncio.wait_for(sentinel.recv(), 10) == "{}"

            pings = [str(i).encode() for i in range(50)]
            client.sock.sendall(b"".join(masked_frame(Opcode.PING, ping) for ping in pings))
            await eventually(
                in_thread(lambda: server_read_everything(gateway.port, client.port)),
                timeout=10,
                what="the server to read the pings",
            )
            client.sock.sendall(masked_frame(Opcode.TEXT, b'{"type":"ping"}'))

            frames = await asyncio.to_thread(client.frames_until, Opcode.TEXT, b'{"type":"pong"}')
            assert [f.data for f in frames if f.opcode is Opcode.PONG] == [pings[-1]]
        finally:
            client.close()
            await sentinel.close()
