"""The publisher library, control calls and CLI on a real Redis Cluster (3 masters): every
publish is an SPUBLISH to the user's shard channel, seen by a raw SSUBSCRIBE on the master that
owns it, and the history, leases and channel of a user live on that one node."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from gateway import wire
from gateway.history.position import parse_position
from gateway.history.reader import HistoryReader
from gateway.leases.limiter import Limiter
from gateway.publishing.publisher import AsyncPublisher, Publisher
from gateway.topology.modes import AsyncClient, Topology
from harness.paths import ROOT
from harness.redis_cluster import RedisCluster, running_cluster
from harness.redis_server import leases_key, live_leases


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with running_cluster(masters=3) as started:
        yield started


@pytest.fixture
def sync(cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture
async def gateway_client(cluster: RedisCluster) -> AsyncIterator[AsyncClient]:
    """A gateway worker's command client, to hold leases as the gateway does."""
    client = Topology("redis://", cluster_nodes=(("127.0.0.1", cluster.nodes[0].port),)).async_client()
    yield client
    await client.aclose()


@contextmanager
def shard_subscriber(cluster: RedisCluster, user: str) -> Iterator[Any]:
    """A raw SSUBSCRIBE to the user's channel, on the master that owns its slot."""
    with cluster.master_of(f"ws:{user}").client() as client, client.pubsub() as pubsub:
        pubsub.ssubscribe(f"ws:{user}")
        confirmed = pubsub.get_message(timeout=5)
        assert confirmed is not None and confirmed["type"] == "ssubscribe"
        yield pubsub


def _next(pubsub: Any) -> bytes:
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["type"] == "smessage", message
    data: bytes = message["data"]
    return data


def test_publish_with_history_is_an_spublish_on_the_users_shard(cluster: RedisCluster, user: str) -> None:
    publisher = Publisher(cluster_nodes=cluster.startup_nodes)
    with shard_subscriber(cluster, user) as pubsub:
        published = publisher.publish(user, {"n": 1})
        assert (int(published), published.position is not None) == (1, True)
        message = wire.parse_history(_next(pubsub))
    assert message is not None and message.data == b'{"n":1}'
    with cluster.master_of(f"ws:{user}").client() as owner:
        assert owner.xlen(f"{{ws:{user}}}:history") == 1  # the history lives on the channel's node
    publisher.close()


def test_publish_without_history_is_a_plain_spublish(cluster: RedisCluster, user: str) -> None:
    publisher = Publisher(cluster_nodes=cluster.startup_nodes, history=False)
    with shard_subscriber(cluster, user) as pubsub:
        assert publisher.publish(user, "hello") == 1
        assert _next(pubsub) == b"hello"
    publisher.close()


def test_publish_many_reaches_users_on_every_node_in_order(cluster: RedisCluster) -> None:
    users = cluster.users_on_every_master(6)
    for history in (True, False):
        publisher = Publisher(cluster_nodes=cluster.startup_nodes, history=history)
        subscribers = [shard_subscriber(cluster, user) for user in users]
        pubsubs = [s.__enter__() for s in subscribers]
        try:
            results = publisher.publish_many([(user, f"to {user}") for user in users])
            assert [int(r) for r in results] == [1] * len(users)
            for user, pubsub in zip(users, pubsubs, strict=True):
                data = _next(pubsub)
                parsed = wire.parse_history(data) if history else None
                assert (parsed.data if parsed else data) == f"to {user}".encode()
        finally:
            for s in subscribers:
                s.__exit__(None, None, None)
            publisher.close()


async def test_async_publisher_on_a_cluster(cluster: RedisCluster, user: str) -> None:
    publisher = AsyncPublisher(cluster_nodes=cluster.startup_nodes)
    with shard_subscriber(cluster, user) as pubsub:
        published = await publisher.publish(user, "one")
        assert int(published) == 1 and published.position is not None
        parsed = wire.parse_history(_next(pubsub))
        assert parsed is not None and parsed.data == b"one"
        plain = AsyncPublisher(cluster_nodes=cluster.startup_nodes, history=False)
        assert await plain.publish(user, "two") == 1
        assert _next(pubsub) == b"two"
        await plain.aclose()
    assert await publisher.online([user]) == {user: 0}
    await publisher.aclose()


async def test_disconnect_and_online_on_a_cluster(
    cluster: RedisCluster, gateway_client: AsyncClient, sync: redis.RedisCluster
) -> None:
    """Leases held on every node: online counts each user's; disconnect frees one user's places
    and its command reaches the user's shard subscriber."""
    users = cluster.users_on_every_master(6)
    limiter = Limiter(gateway_client, "ws", f"w-{uuid.uuid4().hex[:8]}", 5, 30.0)
    for count, user in enumerate(users, start=1):
        for _ in range(min(count, 5)):
            assert await limiter.acquire(user, lambda: None) is not None
    publisher = Publisher(cluster_nodes=cluster.startup_nodes)
    assert publisher.online(users) == {user: min(n, 5) for n, user in enumerate(users, start=1)}
    target = users[2]
    with shard_subscriber(cluster, target) as pubsub:
        assert publisher.disconnect(target) == 3
        assert _next(pubsub) == wire.control_command("disconnect", None)
    assert live_leases(sync, target) == 0
    assert publisher.online([target]) == {target: 0}
    publisher.close()


def _cli(cluster: RedisCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_CLUSTER_NODES": cluster.startup_nodes}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_the_cli_in_cluster_mode(
    cluster: RedisCluster, gateway_client: AsyncClient, sync: redis.RedisCluster, user: str
) -> None:
    """publish (with and without history), connections, online and disconnect, configured by
    REDIS_CLUSTER_NODES alone."""
    limiter = Limiter(gateway_client, "ws", f"w-{uuid.uuid4().hex[:8]}", 3, 30.0)
    lease = await limiter.acquire(user, lambda: None)
    assert lease is not None
    with shard_subscriber(cluster, user) as pubsub:
        done = _cli(cluster, "publish", user, '{"n": 1}')
        assert done.returncode == 0, done.stderr
        parsed = wire.parse_history(_next(pubsub))
        assert parsed is not None and parsed.data == b'{"n": 1}'
        done = _cli(cluster, "publish", "--no-history", user, '{"n": 2}')
        assert (done.returncode, _next(pubsub)) == (0, b'{"n": 2}')
        listed = _cli(cluster, "connections", user)
        assert listed.returncode == 0, listed.stderr
        assert lease.connection_id in listed.stdout and "1 live connection(s)" in listed.stdout
        assert _cli(cluster, "online", user).stdout == f"{user}\t1\n"
        done = _cli(cluster, "disconnect", user)
        assert done.stdout == f"disconnected 1 live connection(s) of {user}\n"
        assert _next(pubsub) == wire.control_command("disconnect", None)
    assert live_leases(sync, user) == 0
    assert not sync.hgetall(leases_key(user)) or all(int(v) < 0 for v in sync.hvals(leases_key(user)))


async def test_history_reads_per_slot_on_a_cluster(
    cluster: RedisCluster, gateway_client: AsyncClient
) -> None:
    """The gateway's history reader (recovery, gap fill) reads users on every node in one call."""
    users = cluster.users_on_every_master(6)
    publisher = Publisher(cluster_nodes=cluster.startup_nodes)
    first = publisher.publish_many([(user, f"first {user}") for user in users])
    publisher.publish_many([(user, f"second {user}") for user in users])
    publisher.close()
    gaps = []
    for user, published in zip(users, first, strict=True):
        assert published.position is not None
        position = parse_position(published.position)
        assert position is not None
        gaps.append((user, position.epoch, position.offset))
    readings = await HistoryReader(gateway_client, "ws", replay_cap=100).read_many(gaps)
    assert [(r.result, r.entries) for r in readings] == [("ok", [f"second {u}".encode()]) for u in users]
