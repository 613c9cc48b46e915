"""Sentinel mode against a real Sentinel set (1 master, 1 replica, 3 sentinels): the master is
killed, or failed over while alive, and the sockets stay open while delivery and admission move."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection

from gateway import keys
from gateway.publishing.publisher import Publisher
from harness.api_client import API_KEY, post
from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.paths import ROOT
from harness.redis_sentinel import RedisSentinelSet, Sentinel, running_sentinel
from harness.redis_server import RedisServer, live_leases
from harness.waiting import eventually, in_thread

LIMIT = 3


@pytest.fixture
def sentinel_set() -> Iterator[RedisSentinelSet]:
    with running_sentinel() as sentinels:
        yield sentinels


def gateway_env(sentinels: RedisSentinelSet) -> dict[str, str]:
    return {
        "REDIS_SENTINELS": sentinels.sentinel_addresses,
        "REDIS_SENTINEL_MASTER": sentinels.master_name,
        "WEBSOCKET_MAX_CONNECTIONS_PER_USER": str(LIMIT),
    }


def publisher(sentinels: RedisSentinelSet) -> Publisher:
    """The publisher library through the sentinels (it follows the master by itself)."""
    return Publisher(sentinels=sentinels.sentinel_addresses, sentinel_master=sentinels.master_name)


def publish_once(sentinels: RedisSentinelSet, user: str, data: object) -> None:
    publisher_ = publisher(sentinels)
    try:
        publisher_.publish(user, data)
    finally:
        publisher_.close()


def publish_once_direct(server: RedisServer, user: str, data: object) -> None:
    """The library on a client of one server (the sentinels are not asked)."""
    with server.client() as client:
        Publisher(client=client).publish(user, data)


async def cli(sentinels: RedisSentinelSet, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ...`` with the gateway's Sentinel variables (REDIS_URL unset)."""
    env = {
        **os.environ,
        "REDIS_SENTINELS": sentinels.sentinel_addresses,
        "REDIS_SENTINEL_MASTER": sentinels.master_name,
    }
    env.pop("REDIS_URL", None)
    command = [sys.executable, "-m", "gateway", *args]
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
    )


async def open_sockets(gateway: Gateway, user: str, count: int) -> list[ClientConnection]:
    sockets = [await admit(gateway.ws_url, user) for _ in range(count)]
    assert all(isinstance(ws, ClientConnection) for ws in sockets), sockets
    return sockets  # type: ignore[return-value]


async def received(sockets: list[ClientConnection], expected: object, timeout: float = 10) -> None:
    for ws in sockets:
        assert json.loads(await asyncio.wait_for(ws.recv(), timeout)) == expected


def pubsub_connections(server: RedisServer) -> int:
    """The gateway workers' pub/sub connections on one server."""
    with server.client() as client:
        listed = client.client_list(_type="pubsub")
    return sum(1 for entry in listed if entry["name"].startswith("gateway-sub:"))


def followers(sentinel: Sentinel) -> int:
    """Gateway workers listening for +switch-master on one sentinel."""
    with sentinel.client() as client:
        listed = client.client_list(_type="pubsub")
    return sum(1 for entry in listed if entry["name"].startswith("gateway-sentinel:"))


def health(gateway: Gateway) -> tuple[int, dict[str, object]]:
    status, body = gateway.get("/healthz/redis")
    return status, json.loads(body)


def reconnects(gateway: Gateway) -> float:
    return value(scrape(gateway), "websocket_redis_reconnects_total")


def role(server: RedisServer) -> str:
    with server.client() as client:
        return str(client.info("replication")["role"])


async def test_a_gateway_behind_sentinel_admits_and_delivers_from_the_master_the_sentinels_name(
    sentinel_set: RedisSentinelSet, user: str
) -> None:
    """Sockets admitted against the named master; the library's publishes reach them; the limit
    holds; /healthz/redis names the master; the replica holds no pub/sub connection. With every
    sentinel silent, health says Redis is unavailable but delivery goes on."""
    host, port = sentinel_set.current_master()
    master = sentinel_set.server_at(port)
    with running_gateway("redis://", workers=2, **gateway_env(sentinel_set)) as gateway:
        sockets = await open_sockets(gateway, user, LIMIT)
        assert await admit(gateway.ws_url, user) == 4029
        with master.client() as client:
            assert live_leases(client, user) == LIMIT
        publish_once(sentinel_set, user, {"hello": 1})
        await received(sockets, {"hello": 1})
        assert health(gateway) == (200, {"redis": "ok", "master": f"{host}:{port}"})
        assert pubsub_connections(master) == 2
        assert sentinel_set.replica is not None
        assert pubsub_connections(sentinel_set.replica) == 0
        assert reconnects(gateway) == 0
        # Every sentinel silent: health says so, and delivery (already connected) goes on.
        with contextlib.ExitStack() as paused:
            for sentinel in sentinel_set.sentinels:
                paused.enter_context(sentinel.paused())
            assert health(gateway) == (503, {"redis": "no_master", "master": None})
            publish_once_direct(master, user, {"hello": 2})
            await received(sockets, {"hello": 2})
        for ws in sockets:
            await ws.close()


async def test_a_killed_master_costs_seconds_of_delivery_and_no_socket(
    sentinel_set: RedisSentinelSet, user: str
) -> None:
    """SIGKILL the master: the sentinels promote the replica; what the library publishes right after
    reaches every socket (live, or through the gap fill), then what the CLI publishes; no socket
    closes. Admission answers 1013 until the promotion, then counts places on the new master (the
    CLI's online reads them)."""
    with running_gateway("redis://", workers=2, **gateway_env(sentinel_set)) as gateway:
        sockets = await open_sockets(gateway, user, LIMIT)
        publish = publisher(sentinel_set)
        publish.publish(user, {"n": 0})
        await received(sockets, {"n": 0})
        killed_at = time.monotonic()
        new = sentinel_set.kill_master()
        # No master until the replica is promoted: admission fails closed.
        assert await admit(gateway.ws_url, f"{user}-during") == 1013
        await asyncio.to_thread(sentinel_set.wait_for_failover, new)
        promoted_after = time.monotonic() - killed_at
        publish.publish(user, {"n": 1})
        await received(sockets, {"n": 1}, timeout=15)
        resumed_after = time.monotonic() - killed_at
        print(f"promoted after {promoted_after:.1f} s, delivery resumed after {resumed_after:.1f} s")
        assert resumed_after < promoted_after + 5
        assert all(ws.close_code is None for ws in sockets)
        await eventually(
            in_thread(lambda: health(gateway) == (200, {"redis": "ok", "master": f"127.0.0.1:{new.port}"})),
            timeout=10,
            what="/healthz/redis to name the new master",
        )
        assert reconnects(gateway) == 2  # one per worker
        done = await cli(sentinel_set, "publish", user, '{"n": 2}')
        assert done.returncode == 0, done.stderr
        await received(sockets, {"n": 2})
        other = f"{user}-after"
        others = await open_sockets(gateway, other, LIMIT)
        assert await admit(gateway.ws_url, other) == 4029
        with new.client() as client:
            assert live_leases(client, other) == LIMIT
        assert (await cli(sentinel_set, "online", other)).stdout == f"{other}\t{LIMIT}\n"
        publish.close()
        for ws in sockets + others:
            await ws.close()


async def test_a_failover_with_the_old_master_alive_moves_pubsub_at_once(
    sentinel_set: RedisSentinelSet, user: str
) -> None:
    """SENTINEL FAILOVER: the old master lives on (and is a master for seconds more). Every
    worker's pub/sub connection moves to the new master on +switch-master, long before the old one
    is demoted; publishes there are delivered, new places are counted there, no socket closes."""
    _, old_port = sentinel_set.current_master()
    old = sentinel_set.server_at(old_port)
    with running_gateway("redis://", workers=2, **gateway_env(sentinel_set)) as gateway:
        sockets = await open_sockets(gateway, user, 2)
        asked_at = time.monotonic()
        new = sentinel_set.failover_and_wait()
        switched_after = time.monotonic() - asked_at
        await eventually(
            in_thread(lambda: pubsub_connections(new) == 2 and pubsub_connections(old) == 0),
            timeout=3,
            what="every worker's pub/sub connection to move to the new master",
        )
        print(
            f"switched after {switched_after:.1f} s, pub/sub moved after {time.monotonic() - asked_at:.1f} s"
        )
        # Still a master: the move came from +switch-master, not from the demotion.
        assert role(old) == "master"
        assert reconnects(gateway) == 2  # one per worker
        publish_once(sentinel_set, user, {"after": "switch"})
        await received(sockets, {"after": "switch"})
        other = f"{user}-after"
        (admitted,) = await open_sockets(gateway, other, 1)
        with new.client() as client:
            assert live_leases(client, other) == 1
        with old.client() as client:
            assert live_leases(client, other) == 0
        assert all(ws.close_code is None for ws in sockets)
        assert health(gateway) == (200, {"redis": "ok", "master": f"127.0.0.1:{new.port}"})
        for ws in [*sockets, admitted]:
            await ws.close()


async def test_the_api_publishes_on_the_new_master_after_a_switch(
    sentinel_set: RedisSentinelSet, user: str
) -> None:
    """The HTTP API's publishes have a Redis client of their own (one that never sends a command
    twice): it follows a switch like the worker's others, though the old master is still one."""
    _, old_port = sentinel_set.current_master()
    old = sentinel_set.server_at(old_port)
    env = {**gateway_env(sentinel_set), "WEBSOCKET_API_KEYS": API_KEY}
    with running_gateway("redis://", workers=1, **env) as gateway:
        assert (await post(gateway, "/api/publish", {"user": f"{user}-warm", "data": 0})).status == 200
        new = sentinel_set.failover_and_wait()
        await eventually(
            in_thread(lambda: pubsub_connections(new) == 1), timeout=3, what="the worker to follow the switch"
        )
        answer = await post(gateway, "/api/publish", {"user": user, "data": "after"})
        assert answer.status == 200, answer.body
        assert role(old) == "master"
        with new.client() as client:
            assert client.xlen(keys.history_key("ws", user)) == 1
        with old.client() as client:
            assert client.xlen(keys.history_key("ws", user)) == 0


async def test_workers_whose_sentinel_dies_listen_on_another_and_still_follow_a_failover(
    sentinel_set: RedisSentinelSet, user: str
) -> None:
    """Every sentinel a worker listens on is SIGKILLed (at least one is left: two workers); each
    worker listens on a survivor, and a failover there still moves its pub/sub connection at once."""
    _, old_port = sentinel_set.current_master()
    old = sentinel_set.server_at(old_port)
    with running_gateway("redis://", workers=2, **gateway_env(sentinel_set)) as gateway:
        sockets = await open_sockets(gateway, user, 2)
        await eventually(
            in_thread(lambda: sum(followers(s) for s in sentinel_set.sentinels) == 2),
            timeout=5,
            what="both workers to listen on a sentinel",
        )
        listened = [s for s in sentinel_set.sentinels if followers(s) > 0]
        for sentinel in listened:
            sentinel.kill()
        survivors = [s for s in sentinel_set.sentinels if s not in listened]
        await eventually(
            in_thread(lambda: sum(followers(s) for s in survivors) == 2),
            timeout=5,
            what="both workers to listen on a surviving sentinel",
        )
        new = sentinel_set.failover_and_wait()
        await eventually(
            in_thread(lambda: pubsub_connections(new) == 2 and pubsub_connections(old) == 0),
            timeout=3,
            what="every worker's pub/sub connection to move to the new master",
        )
        publish_once(sentinel_set, user, {"after": "switch"})
        await received(sockets, {"after": "switch"})
        assert all(ws.close_code is None for ws in sockets)
        for ws in sockets:
            await ws.close()
