"""The Limiter on a real Redis Cluster (3 masters): several hosts, each with its own cluster
client, share the per-user limit. A script whose keys span two slots never reaches Redis: the
cluster client refuses it (and Redis would answer CROSSSLOT), so every test here also proves that
no lease script crosses slots."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.crc import key_slot

from gateway import keys
from gateway.leases.dead_workers import release_worker
from gateway.leases.limiter import RELEASE, Limiter, LimiterUnavailable
from gateway.publishing.publisher import Publisher
from gateway.topology.modes import UNAVAILABLE, AsyncClient, Topology
from harness.ports import free_port
from harness.redis_cluster import RedisCluster, running_cluster
from harness.redis_server import leases_key, live_leases
from harness.waiting import eventually

LIMIT = 3
HOSTS = 5


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
async def clients(cluster: RedisCluster) -> AsyncIterator[list[AsyncClient]]:
    """One command client per host, as each gateway host builds it."""
    topology = Topology("redis://", cluster_nodes=tuple(("127.0.0.1", n.port) for n in cluster.nodes))
    made = [topology.async_client(socket_timeout=5) for _ in range(HOSTS)]
    yield made
    for client in made:
        await client.aclose()


def _never_lost() -> None:
    raise AssertionError("no lease should be lost here")


async def test_the_limit_is_exact_under_100_simultaneous_attempts_across_hosts(
    cluster: RedisCluster, clients: list[AsyncClient], sync: redis.RedisCluster
) -> None:
    """100 acquires at once, spread over five hosts' limiters, for four users on several nodes:
    each user gets exactly LIMIT places, and Redis holds exactly those."""
    users = cluster.users_on_every_master(4)
    limiters = [Limiter(client, "ws", f"host{i}-1", LIMIT, 30.0) for i, client in enumerate(clients)]
    attempts = [(limiters[i % HOSTS], users[i % len(users)]) for i in range(100)]
    results = await asyncio.gather(*(limiter.acquire(user, _never_lost) for limiter, user in attempts))
    for user in users:
        taken = [lease for lease in results if lease is not None and lease.user_id == user]
        assert len(taken) == LIMIT, user
        assert live_leases(sync, user) == LIMIT


async def test_a_release_frees_the_place_for_another_host(
    clients: list[AsyncClient], sync: redis.RedisCluster, user: str
) -> None:
    a, b = Limiter(clients[0], "ws", "a-1", 1, 30.0), Limiter(clients[1], "ws", "b-1", 1, 30.0)
    held = await a.acquire(user, _never_lost)
    assert held is not None
    assert await b.acquire(user, _never_lost) is None
    await a.release(held)
    assert live_leases(sync, user) == 0
    assert await b.acquire(user, _never_lost) is not None


async def test_beats_keep_every_lease_on_every_node_alive(
    cluster: RedisCluster, clients: list[AsyncClient], sync: redis.RedisCluster
) -> None:
    """A worker with users on all three masters beats for longer than the lease time: every
    place is still its own, another host is refused each of them. Its key in each slot it uses
    shares that slot (the slot's tag, the same for every worker)."""
    users = cluster.users_on_every_master(12)
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    worker = Limiter(clients[0], "ws", worker_id, 1, 1.0)
    for user in users:
        assert await worker.acquire(user, _never_lost) is not None
    until = asyncio.get_running_loop().time() + 2.5
    while asyncio.get_running_loop().time() < until:  # inside each lease: only the beats keep them
        await worker.beat()
        await asyncio.sleep(0.3)
    other = Limiter(clients[1], "ws", "o-1", 1, 1.0)
    # A refusal asks again for a quarter of a second first (reopening at the limit): twelve of
    # them outlast the lease time, so the worker goes on beating meanwhile, as its heartbeat would.
    beating = asyncio.create_task(_beat_every(worker, 0.3))
    try:
        for user in users:
            assert await other.acquire(user, _never_lost) is None, user
            holder = keys.worker_leases_key(worker_id, keys.holder_tag("ws", user, cluster=True))
            assert key_slot(holder.encode()) == key_slot(f"ws:{user}".encode())
            assert sync.exists(holder)
    finally:
        beating.cancel()
    assert len(worker.leases) == len(users)


async def _beat_every(limiter: Limiter, interval: float) -> None:
    while True:
        await limiter.beat()
        await asyncio.sleep(interval)


async def test_a_dead_workers_places_on_every_node_lapse_within_the_lease_time(
    cluster: RedisCluster, clients: list[AsyncClient]
) -> None:
    """A host dies (its limiter dropped, no master to release): each slot's key of its worker
    lapses, and every user on every node gets a place again within the lease time."""
    users = cluster.users_on_every_master(12)
    dead = Limiter(clients[0], "ws", f"dead-{uuid.uuid4().hex[:8]}", 1, 1.0)
    for user in users:
        assert await dead.acquire(user, _never_lost) is not None
    started = asyncio.get_running_loop().time()
    survivor = Limiter(clients[1], "ws", "s-1", 1, 30.0)
    for user in users:

        async def admitted(user: str = user) -> bool:
            return await survivor.acquire(user, _never_lost) is not None

        await eventually(admitted, timeout=5, interval=0.05, what=f"{user}'s place")
    assert asyncio.get_running_loop().time() - started < 1.0 + 1.5


async def test_release_worker_frees_a_killed_workers_places_on_every_node(
    cluster: RedisCluster, clients: list[AsyncClient], sync: redis.RedisCluster
) -> None:
    """The worker dies without releasing anything (its limiter is simply dropped); gunicorn's
    master releases all its places, whatever node they live on, and leaves no key behind."""
    users = cluster.users_on_every_master(30)
    worker_id = f"dead-{uuid.uuid4().hex[:8]}"
    dead = Limiter(clients[0], "ws", worker_id, LIMIT, 30.0)
    for user in users:
        assert await dead.acquire(user, _never_lost) is not None
    assert release_worker(sync, "ws", worker_id) == len(users)
    for user in users:
        assert live_leases(sync, user) == 0, user
    assert not sync.exists(f"ws:worker:{worker_id}")
    holders = {keys.worker_leases_key(worker_id, keys.holder_tag("ws", user, cluster=True)) for user in users}
    assert not any(sync.exists(holder) for holder in holders)
    survivor = Limiter(clients[1], "ws", "s-1", 1, 30.0)
    assert all([await survivor.acquire(user, _never_lost) for user in users])


def test_a_users_lease_keys_share_the_slot_of_its_channel(user: str) -> None:
    """What lets one script write a user's leases and SPUBLISH to the user's shard channel."""
    channel_slot = key_slot(f"ws:{user}".encode())
    for suffix in ("conns", "recovery", "history", "meta", "worker:host-1-2"):
        assert key_slot(f"{{ws:{user}}}:{suffix}".encode()) == channel_slot
    assert key_slot(leases_key(user).encode()) == channel_slot


async def test_a_cluster_out_of_reach_fails_closed(user: str) -> None:
    """No node answers: the cluster client raises RedisClusterException (not a RedisError), and
    admission still fails closed with LimiterUnavailable (1013), not an internal error."""
    topology = Topology("redis://", cluster_nodes=(("127.0.0.1", free_port()),))
    client = topology.async_client(socket_connect_timeout=1)
    limiter = Limiter(client, "ws", "w-1", LIMIT, 30.0)
    with pytest.raises(LimiterUnavailable):
        await limiter.acquire(user, _never_lost)
    assert limiter.leases == {}
    await client.aclose()


async def test_the_limiter_keeps_working_after_a_master_failover(user: str) -> None:
    """A master is SIGKILLed and its replica promoted: the clients' pipelines to the dead master
    fail, and the new master has no script cache (scripts replicate as their effects), so the calls
    go again and get NOSCRIPT; the scripts are loaded and run, and a user of the failed-over slots
    is admitted, renewed and released as before, and published to."""
    with running_cluster(masters=3, replicas=1) as cluster:
        topology = Topology("redis://", cluster_nodes=tuple(("127.0.0.1", n.port) for n in cluster.nodes))
        client = topology.async_client(socket_timeout=5)
        try:
            limiter = Limiter(client, "ws", "w-1", 1, 30.0)
            held = await limiter.acquire(user, _never_lost)
            assert held is not None
            await limiter.release(held)
            publisher = Publisher(cluster_nodes=cluster.startup_nodes)
            assert publisher.publish(user, "before").position is not None
            promoted = cluster.kill_master_and_wait_for_failover(cluster.master_of(f"ws:{user}"))
            # The publisher's pipeline to the dead master is cut off, and goes again to the new one.
            assert publisher.publish(user, "after").position is not None
            publisher.close()
            with promoted.client() as raw:
                assert raw.script_exists(RELEASE.sha) == [False]  # the NOSCRIPT path is taken
            again = await limiter.acquire(user, _never_lost)
            assert again is not None
            await limiter.beat()
            assert await limiter.acquire(user, _never_lost) is None
            await limiter.release(again)
            with cluster.client() as sync_client:
                assert live_leases(sync_client, user) == 0
        finally:
            await client.aclose()


async def test_a_dead_master_without_replica_costs_only_its_own_users() -> None:
    """A master is SIGKILLed and nothing takes over: its users' acquires fail (1013), leaving
    releases owed to it, and it held the worker's tag set. Every user of the other masters is
    still admitted in a new slot, renewed and released; what is owed to the dead master stays
    pending, not in anyone else's way."""
    with running_cluster(masters=3) as cluster:
        topology = Topology("redis://", cluster_nodes=tuple(("127.0.0.1", n.port) for n in cluster.nodes))
        client = topology.async_client(socket_timeout=5)
        try:
            victim = cluster.owner(0)  # the first master redis-py lists, too
            worker = next(
                f"w-{i}"
                for i in range(10_000)
                if cluster.owner(key_slot(f"ws:worker:w-{i}".encode())) is victim
            )
            limiter = Limiter(client, "ws", worker, 1, 30.0)
            users = [f"u-{uuid.uuid4().hex[:12]}" for _ in range(60)]
            doomed = [user for user in users if cluster.master_of(f"ws:{user}") is victim][:4]
            healthy = [user for user in users if cluster.master_of(f"ws:{user}") is not victim][:12]
            warm = await limiter.acquire(healthy.pop(), _never_lost)
            assert warm is not None
            victim.kill()
            for user in doomed:
                with pytest.raises(LimiterUnavailable):
                    await limiter.acquire(user, _never_lost)
            assert limiter.releases.unsettled == len(doomed)
            held = [await limiter.acquire(user, _never_lost) for user in healthy]
            assert all(lease is not None for lease in held)
            with pytest.raises(UNAVAILABLE):  # the dead master's releases only
                await limiter.releases.settle()
            with cluster.client() as sync_client:
                for user in healthy:
                    assert live_leases(sync_client, user) == 1, user
                for lease in [warm, *held]:
                    assert lease is not None
                    await limiter.release(lease)
                for user in healthy:
                    assert live_leases(sync_client, user) == 0, user
            # The cluster client may fail a command to a live master while it re-reads the map
            # after the dead one's errors: that release is pending, and goes through when sent again.
            with pytest.raises(UNAVAILABLE):
                await limiter.releases.settle()
            assert limiter.releases.unsettled == len(doomed)
        finally:
            await client.aclose()
