"""The lease scripts and the Limiter against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.limiter import Limiter, LimiterUnavailable, load_script, release_worker
from tests.servers import RedisServer, command_calls, eventually

LIMIT = 3
LEASE_MS = 1000


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


def _limiter(client: aioredis.Redis, worker: str, lease_ttl: float = 30.0) -> Limiter:
    return Limiter(client, "ws", worker, LIMIT, lease_ttl)


def _never_lost() -> None:
    raise AssertionError("no lease should be lost here")


async def test_places_up_to_the_limit_then_refusal_and_release_frees_one(
    client: aioredis.Redis, user: str
) -> None:
    limiter = _limiter(client, f"w-{user}")
    leases = [await limiter.acquire(user, _never_lost) for _ in range(LIMIT)]
    assert all(leases)
    assert await limiter.acquire(user, _never_lost) is None
    assert await client.hlen(f"ws:conns:{user}") == LIMIT
    first = leases[0]
    assert first is not None
    await limiter.release(first)
    assert await limiter.acquire(user, _never_lost) is not None
    assert await limiter.acquire(user, _never_lost) is None


async def test_the_limit_holds_across_workers(client: aioredis.Redis, user: str) -> None:
    """Two workers share one hash: together they never exceed the limit."""
    a, b = _limiter(client, f"a-{user}"), _limiter(client, f"b-{user}")
    results = await asyncio.gather(*(x.acquire(user, _never_lost) for x in [a, b] * 10))
    assert sum(r is not None for r in results) == LIMIT


async def test_every_key_has_a_ttl(client: aioredis.Redis, user: str) -> None:
    """Nothing is written without a TTL: a lost host leaves nothing behind for ever."""
    worker = f"w-{user}"
    limiter = _limiter(client, worker, lease_ttl=30)
    assert await limiter.acquire(user, _never_lost)
    for key in (f"ws:conns:{user}", f"ws:worker:{worker}"):
        assert 0 < await client.pttl(key) <= 30_000, key


async def test_lapsed_leases_stop_counting(client: aioredis.Redis, user: str) -> None:
    """A worker that stops renewing (killed) loses its places once the lease time has passed."""
    dead = _limiter(client, f"dead-{user}", lease_ttl=1.0)
    for _ in range(LIMIT):
        assert await dead.acquire(user, _never_lost)
    alive = _limiter(client, f"alive-{user}")
    assert await alive.acquire(user, _never_lost) is None
    await eventually(lambda: alive.acquire(user, _never_lost), what="a place after the lease time")


async def test_renew_keeps_places_past_the_lease_time(client: aioredis.Redis, user: str) -> None:
    limiter = _limiter(client, f"w-{user}", lease_ttl=1.0)
    for _ in range(LIMIT):
        assert await limiter.acquire(user, _never_lost)
    for _ in range(4):
        await asyncio.sleep(0.4)  # well inside the 1 s lease: the renewals are what keep it
        await limiter.renew()
    other = _limiter(client, f"o-{user}")
    assert await other.acquire(user, _never_lost) is None


async def test_renew_extends_each_users_key_once(
    redis_server: RedisServer, client: aioredis.Redis, user: str
) -> None:
    """A beat costs one HSET per lease but one PEXPIRE per user key, not per lease."""
    limiter = _limiter(client, f"w-{user}")
    for owner in (user, user, user, f"{user}-b"):
        assert await limiter.acquire(owner, _never_lost)
    monitor = redis_server.client()
    before = command_calls(monitor)
    await limiter.renew()
    after = command_calls(monitor)
    assert after.get("hset", 0) - before.get("hset", 0) == 4
    # One per user key, and one for the worker's own set.
    assert after.get("pexpire", 0) - before.get("pexpire", 0) == 2 + 1
    assert await client.pttl(f"ws:conns:{user}") > 25_000
    assert await client.pttl(f"ws:conns:{user}-b") > 25_000
    monitor.close()


async def test_a_lapsed_lease_is_taken_again_or_its_connection_ended(
    client: aioredis.Redis, user: str
) -> None:
    """After an outage longer than the lease, renew re-takes the place if free, else ends the socket."""
    ended: list[str] = []
    slow = _limiter(client, f"slow-{user}", lease_ttl=1.0)
    kept = await slow.acquire(user, lambda: ended.append("kept"))
    assert kept is not None
    await client.hdel(f"ws:conns:{user}", kept.connection_id)  # as if it had lapsed
    await slow.renew()
    assert ended == []
    assert await client.hexists(f"ws:conns:{user}", kept.connection_id)

    await client.hdel(f"ws:conns:{user}", kept.connection_id)
    other = _limiter(client, f"o-{user}")
    for _ in range(LIMIT):
        assert await other.acquire(user, _never_lost)
    await slow.renew()
    assert ended == ["kept"]
    assert kept.connection_id not in slow.leases


async def test_release_worker_frees_every_place_of_a_dead_worker(
    client: aioredis.Redis, redis_server: RedisServer, user: str
) -> None:
    worker = f"w-{user}"
    limiter = _limiter(client, worker)
    for _ in range(LIMIT):
        assert await limiter.acquire(user, _never_lost)
    with redis.Redis.from_url(redis_server.url) as sync_client:
        assert release_worker(sync_client, "ws", worker) == LIMIT
    assert await client.hlen(f"ws:conns:{user}") == 0
    assert not await client.exists(f"ws:worker:{worker}")


async def test_redis_out_of_reach_fails_closed_or_open(client: aioredis.Redis, user: str) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    limiter = Limiter(dead, "ws", f"w-{user}", LIMIT, 30)
    with pytest.raises(LimiterUnavailable):
        await limiter.acquire(user, _never_lost)
    lease = await limiter.acquire(user, _never_lost, fail_open=True)
    assert lease is not None and lease.connection_id in limiter.leases
    await dead.aclose()


class LeaseScripts(RuleBasedStateMachine):
    """Any interleaving of acquire, renew, release and clock jumps, checked against a model:
    the live count never exceeds the limit, and a refusal only ever happens at the limit."""

    server: RedisServer

    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis(port=self.server.port)
        self.acquire_script = self.client.register_script(load_script("acquire.lua"))
        self.renew_script = self.client.register_script(load_script("renew.lua"))
        self.release_script = self.client.register_script(load_script("release.lua"))
        self.user = uuid.uuid4().hex
        self.key = f"ws:conns:{self.user}"
        self.worker_key = f"ws:worker:{self.user}"
        self.now = 1_000_000
        self.model: dict[str, int] = {}  # connection -> deadline
        self.held: list[str] = []  # what the worker believes it holds, in order

    @initialize()
    def clean(self) -> None:
        self.client.delete(self.key, self.worker_key)

    def _live_in_model(self, excluding: str = "") -> int:
        return sum(1 for c, d in self.model.items() if d > self.now and c != excluding)

    def _purge_model(self) -> None:
        self.model = {c: d for c, d in self.model.items() if d > self.now}

    @rule(conn=st.sampled_from([f"c{i}" for i in range(6)]))
    def acquire(self, conn: str) -> None:
        taken, live = self.acquire_script(
            keys=[self.key, self.worker_key], args=[self.now, conn, self.user, LIMIT, LEASE_MS]
        )
        self._purge_model()
        expected = self._live_in_model(excluding=conn) < LIMIT
        assert bool(taken) == expected
        if taken:
            self.model[conn] = self.now + LEASE_MS
            if conn not in self.held:
                self.held.append(conn)
        else:
            assert live >= LIMIT

    @precondition(lambda self: self.held)
    @rule()
    def renew(self) -> None:
        members = [f"{c} {self.user}" for c in self.held]
        lost = self.renew_script(
            keys=[self.worker_key] + [self.key] * len(members), args=[self.now, LIMIT, LEASE_MS, *members]
        )
        expected_lost = []
        for conn in self.held:
            if self.model.get(conn, 0) > self.now:
                self.model[conn] = self.now + LEASE_MS
                continue
            self._purge_model()
            if self._live_in_model(excluding=conn) < LIMIT:
                self.model[conn] = self.now + LEASE_MS
            else:
                expected_lost.append(conn)
        assert [x.decode() for x in lost] == expected_lost
        self.held = [c for c in self.held if c not in expected_lost]

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.held))
        self.release_script(keys=[self.key, self.worker_key], args=[conn, self.user])
        self.model.pop(conn, None)
        self.held.remove(conn)

    @rule(ms=st.integers(min_value=0, max_value=2 * LEASE_MS))
    def clock_jumps(self, ms: int) -> None:
        self.now += ms

    @invariant()
    def live_count_never_exceeds_the_limit(self) -> None:
        deadlines = [int(v) for v in self.client.hvals(self.key)]
        assert sum(1 for d in deadlines if d > self.now) <= LIMIT
        assert sum(1 for d in deadlines if d > self.now) == self._live_in_model()

    def teardown(self) -> None:
        self.client.delete(self.key, self.worker_key)
        self.client.close()


def test_lease_scripts_against_a_model(redis_server: RedisServer) -> None:
    LeaseScripts.server = redis_server
    runner = LeaseScripts.TestCase
    runner.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
    runner().runTest()
