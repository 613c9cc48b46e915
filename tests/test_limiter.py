"""The lease scripts and the Limiter against a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.leases.dead_workers import release_worker
from gateway.leases.limiter import Lease, Limiter, LimiterUnavailable
from gateway.topology.scripts import LuaScript
from harness.redis_server import RedisServer, command_calls, leases_key, live_leases
from harness.waiting import eventually, wait_for

LIMIT = 3
LEASE_MS = 1000


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


class Clock:
    """The limiter's "now" (ms), moved by the test: a lease lapses without waiting for it."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def _limiter(
    client: aioredis.Redis, worker: str, lease_ttl: float = 30.0, clock: Clock | None = None
) -> Limiter:
    return Limiter(client, "ws", worker, LIMIT, lease_ttl, clock=clock)


def _never_lost() -> None:
    raise AssertionError("no lease should be lost here")


async def test_places_up_to_the_limit_then_refusal_and_release_frees_one(
    client: aioredis.Redis, user: str
) -> None:
    limiter = _limiter(client, f"w-{user}")
    leases = [await limiter.acquire(user, _never_lost) for _ in range(LIMIT)]
    assert all(leases)
    assert await limiter.acquire(user, _never_lost) is None
    assert await client.hlen(leases_key(user)) == LIMIT
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


async def test_leases_under_the_old_key_names_neither_count_nor_block(
    client: aioredis.Redis, user: str
) -> None:
    """A rolling upgrade: an old worker's leases in ``ws:conns:{user}`` are not seen by the new
    scripts (the user may briefly exceed the limit), and the new ones leave them alone."""
    now_ms = int(time.time() * 1000)
    old = {f"old-1:{i}": now_ms + 30_000 for i in range(LIMIT)}
    await client.hset(f"ws:conns:{user}", mapping=old)  # type: ignore[arg-type]
    limiter = _limiter(client, f"w-{user}")
    assert all([await limiter.acquire(user, _never_lost) for _ in range(LIMIT)])
    assert await limiter.acquire(user, _never_lost) is None
    assert await client.hlen(f"ws:conns:{user}") == LIMIT
    await client.delete(f"ws:conns:{user}")


async def test_every_key_has_a_ttl(client: aioredis.Redis, user: str) -> None:
    """Nothing is written without a TTL: a lost host leaves nothing behind for ever."""
    worker = f"w-{user}"
    limiter = _limiter(client, worker, lease_ttl=30)
    assert await limiter.acquire(user, _never_lost)
    for key in (leases_key(user), f"{{ws:{user}}}:worker:{worker}", f"ws:worker:{worker}"):
        assert 0 < await client.pttl(key) <= 30_000, key


async def test_lapsed_leases_stop_counting(client: aioredis.Redis, user: str) -> None:
    """A worker that stops renewing (killed) loses its places once the lease time has passed."""
    clock = Clock()
    dead = _limiter(client, f"dead-{user}", lease_ttl=1.0, clock=clock)
    for _ in range(LIMIT):
        assert await dead.acquire(user, _never_lost)
    alive = _limiter(client, f"alive-{user}", clock=clock)
    assert await alive.acquire(user, _never_lost) is None
    clock.ms += 1000  # the lease time passes
    assert await alive.acquire(user, _never_lost), "a place after the lease time"


async def test_renew_keeps_places_past_the_lease_time(client: aioredis.Redis, user: str) -> None:
    clock = Clock()
    limiter = _limiter(client, f"w-{user}", lease_ttl=1.0, clock=clock)
    for _ in range(LIMIT):
        assert await limiter.acquire(user, _never_lost)
    for _ in range(4):
        clock.ms += 400  # well inside the 1 s lease: the renewals are what keep it
        await limiter.renew()
    other = _limiter(client, f"o-{user}", clock=clock)
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
    # One per user key; one per slot for the worker's list there (two users: two slots), and
    # one for the worker's set of those slots.
    assert after.get("pexpire", 0) - before.get("pexpire", 0) == 2 + 2 + 1
    assert await client.pttl(leases_key(user)) > 25_000
    assert await client.pttl(leases_key(f"{user}-b")) > 25_000
    monitor.close()


async def test_a_lapsed_lease_is_taken_again_or_its_connection_ended(
    client: aioredis.Redis, user: str
) -> None:
    """After an outage longer than the lease, renew re-takes the place if free, else ends the socket."""
    ended: list[str] = []
    clock = Clock()
    slow = _limiter(client, f"slow-{user}", lease_ttl=1.0, clock=clock)
    kept = await slow.acquire(user, lambda: ended.append("kept"))
    assert kept is not None
    other = _limiter(client, f"o-{user}", clock=clock)

    # No renewal for longer than the lease (the outage); an admission then drops the lapsed field.
    clock.ms = kept.until
    assert await other.acquire(user, _never_lost)
    assert not await client.hexists(leases_key(user), kept.connection_id)
    await slow.renew()
    assert ended == []
    assert await client.hexists(leases_key(user), kept.connection_id)

    clock.ms = kept.until  # the lease lapses again
    for _ in range(LIMIT - 1):
        assert await other.acquire(user, _never_lost)
    assert not await client.hexists(leases_key(user), kept.connection_id)
    await slow.renew()
    assert ended == ["kept"]
    assert kept.connection_id not in slow.leases


async def test_a_release_racing_a_renewal_never_resurrects_the_lease(
    client: aioredis.Redis, user: str
) -> None:
    """5,000 leases; 20 connections close while a renewal is in flight: no place is left behind,
    so each of those users (limit 1) gets a place again at once."""
    limiter = Limiter(client, "ws", f"w-{user}", 1, 30)
    owners = [f"{user}-{i}" for i in range(5000)]
    leases: list[Lease] = []
    for start in range(0, len(owners), 100):
        batch = await asyncio.gather(*(limiter.acquire(o, _never_lost) for o in owners[start : start + 100]))
        leases += [lease for lease in batch if lease is not None]
    assert len(leases) == len(owners)
    other = Limiter(client, "ws", f"o-{user}", 1, 30)
    for lease in leases[:: len(leases) // 20][:20]:
        renewal = asyncio.create_task(limiter.renew())
        await asyncio.sleep(0)  # the renewal is on its way when the close comes
        await limiter.release(lease)
        await renewal
        assert await other.acquire(lease.user_id, _never_lost) is not None, "a phantom place"


async def test_after_redis_loses_its_data_established_connections_keep_their_places(user: str) -> None:
    """Redis restarted without persistence, newcomers fill the empty hash, then the established
    worker renews: it takes its places back, nobody established is closed, and the newcomers give
    way: their worker's next renewal ends them (4029), and the user is back at the limit."""
    server = RedisServer()
    server.start()
    ended: list[str] = []
    # As the gateway's pool does: a command on a connection the restart made stale is repeated.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client = aioredis.Redis.from_url(server.url, retry=retry)
    try:
        established = _limiter(client, f"est-{user}")
        held = [await established.acquire(user, lambda: ended.append("established")) for _ in range(LIMIT)]
        await established.renew()
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        await asyncio.to_thread(server.start)
        newcomers = _limiter(client, f"new-{user}")
        for _ in range(LIMIT - 1):
            assert await newcomers.acquire(user, lambda: ended.append("newcomer"))
        await established.renew()
        assert ended == []
        for lease in held:
            assert lease is not None and await client.hexists(leases_key(user), lease.connection_id)
        assert await newcomers.acquire(user, _never_lost) is None
        await newcomers.renew()
        assert ended == ["newcomer"] * (LIMIT - 1)
        assert newcomers.leases == {}
        sync = server.client()
        try:
            assert live_leases(sync, user) == LIMIT
        finally:
            sync.close()
        await established.renew()
        assert len(established.leases) == LIMIT
    finally:
        await client.aclose()
        server.close()


async def test_after_redis_loses_its_data_a_user_never_stays_over_the_limit(user: str) -> None:
    """DESIGN.md 4.2 (the review's finding): limit 1, a newcomer admitted into the hash Redis
    emptied, then the established worker renews. Once both renewals ran, one live lease and one
    open connection are left: the established one."""
    server = RedisServer()
    server.start()
    ended: list[str] = []
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))  # as gateway/app.py
    client = aioredis.Redis.from_url(server.url, retry=retry)
    try:
        established = Limiter(client, "ws", f"est-{user}", 1, 30.0)
        assert await established.acquire(user, lambda: ended.append("established")) is not None
        await established.renew()
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        await asyncio.to_thread(server.start)
        newcomer = Limiter(client, "ws", f"new-{user}", 1, 30.0)
        assert await newcomer.acquire(user, lambda: ended.append("newcomer")) is not None
        await established.renew()
        await newcomer.renew()
        sync = server.client()
        try:
            held = live_leases(sync, user)
        finally:
            sync.close()
        assert (held, ended) == (1, ["newcomer"])
    finally:
        await client.aclose()
        server.close()


def _worker_members(client: redis.Redis, worker: str) -> set[bytes]:
    """Every "connection-id user" the worker lists, in all the slots it named."""
    tags: set[bytes] = client.smembers(f"ws:worker:{worker}")  # type: ignore[assignment]
    members: set[bytes] = set()
    for tag in tags:
        members |= client.smembers(f"{{{tag.decode()}}}:worker:{worker}")  # type: ignore[arg-type]
    return members


def _live_fields(client: redis.Redis, user: str, now: int) -> list[bytes]:
    fields: dict[bytes, bytes] = client.hgetall(leases_key(user))  # type: ignore[assignment]
    return [field for field, deadline in fields.items() if int(deadline) > now]


async def test_an_acquire_that_times_out_on_a_stalled_redis_leaves_no_place(user: str) -> None:
    """Redis stalls past the command timeout: the acquire is refused (LimiterUnavailable), but it
    was written and Redis runs it when it resumes. Its place must not outlive the refusal: the
    same worker's next admission of that user (limit 1) gets in, and no set keeps the member."""
    server = RedisServer()
    server.start()
    clock = Clock()
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.5)
    sync = server.client()
    worker = f"w-{user}"
    try:
        limiter = Limiter(client, "ws", worker, 1, 30.0, clock=clock)
        # Scripts loaded, the user's slot named in the worker's set, the connection idle.
        warm = await limiter.acquire(user, _never_lost)
        assert warm is not None
        await limiter.release(warm)
        with server.paused():
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire(user, _never_lost)
        again = await limiter.acquire(user, _never_lost)
        assert again is not None, f"refused: live {_live_fields(sync, user, clock.ms)}"
        await limiter.release(again)
        assert _live_fields(sync, user, clock.ms) == []
        assert _worker_members(sync, worker) == set()
    finally:
        await client.aclose()
        sync.close()
        server.close()


async def test_an_acquire_cancelled_in_flight_is_undone_by_the_heartbeat(user: str) -> None:
    """A handshake cancelled (uvicorn shutting down) while its acquire waits on a stalled Redis:
    Redis runs the script when it resumes; the worker's next beat gives the place back."""
    server = RedisServer()
    server.start()
    clock = Clock()
    client = aioredis.Redis.from_url(server.url, socket_timeout=10)
    sync = server.client()
    worker = f"w-{user}"
    try:
        limiter = Limiter(client, "ws", worker, 1, 30.0, clock=clock)
        warm = await limiter.acquire(user, _never_lost)
        assert warm is not None
        await limiter.release(warm)
        with server.paused():
            # Cancelled long after the script was written to a local socket.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(limiter.acquire(user, _never_lost), 1.0)
        ghost = f"{worker}:2"
        wait_for(lambda: sync.hexists(leases_key(user), ghost), what="Redis to run the acquire")
        await limiter.releases.settle()
        assert _live_fields(sync, user, clock.ms) == []
        assert _worker_members(sync, worker) == set()
        other = Limiter(client, "ws", f"o-{user}", 1, 30.0, clock=clock)
        assert await other.acquire(user, _never_lost) is not None
    finally:
        await client.aclose()
        sync.close()
        server.close()


async def test_release_worker_frees_every_place_of_a_dead_worker(
    client: aioredis.Redis, redis_server: RedisServer, user: str
) -> None:
    worker = f"w-{user}"
    limiter = _limiter(client, worker)
    for _ in range(LIMIT):
        assert await limiter.acquire(user, _never_lost)
    with redis.Redis.from_url(redis_server.url) as sync_client:
        assert release_worker(sync_client, "ws", worker) == LIMIT
    assert await client.hlen(leases_key(user)) == 0
    assert not await client.exists(f"ws:worker:{worker}", f"{{ws:{user}}}:worker:{worker}")


async def test_redis_out_of_reach_fails_closed(user: str) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    limiter = Limiter(dead, "ws", f"w-{user}", LIMIT, 30)
    with pytest.raises(LimiterUnavailable):
        await limiter.acquire(user, _never_lost)
    assert limiter.leases == {}
    await dead.aclose()


class LeaseScripts(RuleBasedStateMachine):
    """Any interleaving of acquire, renew, release (also racing a renewal), clock jumps and Redis
    losing its data, checked against a model of the hash: a refusal only ever happens at the
    limit, a released place never comes back, and the live count never exceeds the limit, even
    when Redis lost its data while connections were established (the newcomers give way)."""

    server: RedisServer

    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis(port=self.server.port)
        self.acquire_script = self.client.register_script(LuaScript.load("acquire.lua").text)
        self.renew_script = self.client.register_script(LuaScript.load("renew.lua").text)
        self.release_script = self.client.register_script(LuaScript.load("release.lua").text)
        self.disconnect_script = self.client.register_script(LuaScript.load("disconnect.lua").text)
        self.user = uuid.uuid4().hex
        # A worker holding the user, as far as the disconnect script's PUBLISH can tell.
        self.listener = self.client.pubsub()
        self.listener.subscribe(f"ws:{self.user}")
        assert self.listener.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        self.key = f"{{ws:{self.user}}}:conns"
        self.worker_key = f"{{ws:{self.user}}}:worker:w"
        self.recovery_key = f"{{ws:{self.user}}}:recovery"
        self.revoked_key = f"{{ws:{self.user}}}:revoked"
        self.now = 1_000_000
        self.model: dict[str, int] = {}  # field -> lease deadline, or -(forget time) once released
        self.known: dict[str, int] = {}  # what the worker holds -> deadline Redis last confirmed
        # The recovery hash: restored place -> until when, or -(ms) for one ended as over the limit.
        self.marks: dict[str, int] = {}
        self.abandoned = 0
        self.newcomers = 0

    @initialize()
    def clean(self) -> None:
        self.client.delete(self.key, self.worker_key, self.recovery_key, f"{self.worker_key}-other")

    def _live_in_model(self, excluding: str = "") -> int:
        return sum(1 for c, d in self.model.items() if d > self.now and c != excluding)

    def _purge_model(self, excluding: str) -> None:
        """What live_leases drops: lapsed leases and spent tombstones, other than ``excluding``."""
        self.model = {
            c: d for c, d in self.model.items() if c == excluding or d > self.now or (d < 0 and -d > self.now)
        }

    @rule(conn=st.sampled_from([f"c{i}" for i in range(6)]))
    def acquire(self, conn: str) -> None:
        if self._acquire(conn, self.worker_key):
            self.known[conn] = self.now + LEASE_MS

    @rule(count=st.integers(min_value=1, max_value=LIMIT))
    def another_worker_admits(self, count: int) -> None:
        """Newcomers on a worker that never renews here (their leases lapse), e.g. into the hash
        Redis emptied: an established place restored later makes them give way."""
        for _ in range(count):
            self.newcomers += 1
            self._acquire(f"n{self.newcomers}", f"{self.worker_key}-other")

    def _acquire(self, conn: str, worker_key: str) -> bool:
        # A token issued after every disconnect: revocation is tests/test_revocation.py's.
        taken, live, now, _ = self.acquire_script(
            keys=[self.key, worker_key, self.revoked_key],
            args=[self.now, conn, self.user, LIMIT, LEASE_MS, 2**52],
        )
        assert now == self.now
        self._purge_model(excluding=conn)
        released = self.model.get(conn, 0) < 0  # an abandoned acquire released first: never taken
        expected = self._live_in_model(excluding=conn) < LIMIT and not released
        assert bool(taken) == expected
        if taken:
            self.model[conn] = self.now + LEASE_MS
        else:
            assert live >= LIMIT or released
        return bool(taken)

    def _renew(self, known: dict[str, int]) -> None:
        held = list(known)
        until = min(known.values())
        members = [f"{c} {self.user}" for c in held]
        now, lost, revoked = self.renew_script(
            keys=[self.worker_key] + [self.key, self.recovery_key] * len(members),
            args=[self.now, LIMIT, LEASE_MS, until, *members],
        )
        assert now == self.now
        expected_lost = []
        expected_revoked = []
        for conn in held:
            deadline = self.model.get(conn)
            if deadline is not None and deadline < 0:
                # Released or disconnected (4003), or ended as over the limit (4029): never taken again.
                (expected_lost if self.marks.get(conn, 0) < 0 else expected_revoked).append(conn)
                continue
            if deadline is None and self.now < until:
                if self._restored_live(excluding=conn) >= LIMIT:
                    expected_lost.append(conn)
                    continue
                self.model[conn] = self.now + LEASE_MS
                self.marks[conn] = self.now + LEASE_MS
                self._give_way()
                continue
            if deadline is None:
                self._purge_model(excluding=conn)
                if self._live_in_model(excluding=conn) >= LIMIT:
                    expected_lost.append(conn)
                    continue
            self.model[conn] = self.now + LEASE_MS
        assert [x.decode() for x in lost] == expected_lost
        assert [x.decode() for x in revoked] == expected_revoked
        for conn in held:
            if conn in self.known:
                self.known[conn] = self.now + LEASE_MS
        for conn in [*expected_lost, *expected_revoked]:
            self.known.pop(conn, None)  # the worker ends it (4029 or 4003) and forgets it

    def _restored_live(self, excluding: str) -> int:
        return sum(
            1
            for c, d in self.model.items()
            if c != excluding and d > self.now and self.marks.get(c, 0) > self.now
        )

    def _give_way(self) -> None:
        """Over the limit once a place came back: the live places not restored, latest first."""
        others = sorted(
            ((d, c) for c, d in self.model.items() if d > self.now and self.marks.get(c, 0) <= self.now),
            reverse=True,
        )
        for _, conn in others[: self._live_in_model() - LIMIT]:
            self.model[conn] = -(self.now + LEASE_MS)
            self.marks[conn] = -(self.now + LEASE_MS)

    @precondition(lambda self: self.known)
    @rule()
    def renew(self) -> None:
        self._renew(dict(self.known))

    def _release(self, conn: str, tombstone: bool) -> None:
        keep = LEASE_MS if tombstone else 0
        self.release_script(keys=[self.key, self.worker_key], args=[self.now, conn, self.user, keep])
        if tombstone:
            self.model[conn] = -(self.now + LEASE_MS)
        else:
            self.model.pop(conn, None)
        del self.known[conn]

    @precondition(lambda self: self.known)
    @rule(data=st.data(), tombstone=st.booleans())
    def release(self, data: st.DataObject, tombstone: bool) -> None:
        """No renewal on its way (the worker would leave no tombstone), or one settled meanwhile."""
        self._release(data.draw(st.sampled_from(sorted(self.known))), tombstone)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def release_racing_a_renewal(self, data: st.DataObject) -> None:
        """The renewal was sent with the connection in it, but Redis runs the release first."""
        snapshot = dict(self.known)
        self._release(data.draw(st.sampled_from(sorted(snapshot))), tombstone=True)
        self._renew(snapshot)

    @rule(release_first=st.booleans())
    def abandoned_acquire(self, release_first: bool) -> None:
        """The worker gave up waiting for an acquire (a timeout, a cancelled handshake) and
        releases that id for a lease time; Redis runs the two in either order."""
        self.abandoned += 1
        ghost = f"g{self.abandoned}"
        if release_first:
            self.known[ghost] = 0
            self._release(ghost, tombstone=True)
            self.acquire(ghost)
        else:
            self.acquire(ghost)
            self.known[ghost] = 0
            self._release(ghost, tombstone=True)

    @rule(data=st.data(), one=st.booleans())
    def disconnect(self, data: st.DataObject, one: bool) -> None:
        """Every connection of the user, or one: their places become tombstones whatever the
        worker does next (its release, or a renewal if it missed the command)."""
        target = data.draw(st.sampled_from(sorted(self.model))) if one and self.model else ""
        named = [c for c, d in self.model.items() if (not target or c == target) and d >= 0]
        live = sum(1 for c in named if self.model[c] > self.now)
        reached = self.disconnect_script(
            keys=[self.key, self.revoked_key],
            args=[self.now, f"ws:{self.user}", b"\xffCdisconnect", target, 3 * LEASE_MS, "", LEASE_MS],
        )
        assert reached == live
        for conn in named:
            self.model[conn] = -(self.now + 3 * LEASE_MS)

    @rule(ms=st.integers(min_value=0, max_value=2 * LEASE_MS))
    def clock_jumps(self, ms: int) -> None:
        self.now += ms

    @rule(newcomers=st.integers(min_value=0, max_value=LIMIT))
    def redis_loses_its_data(self, newcomers: int) -> None:
        """Then, as often happens, newcomers fill the emptied hash before the next renewal."""
        # All these scripts touch: a FLUSHALL to them.
        self.client.delete(self.key, self.worker_key, self.recovery_key, f"{self.worker_key}-other")
        self.model.clear()
        self.marks.clear()
        if newcomers:
            self.another_worker_admits(newcomers)

    @invariant()
    def live_count_matches_the_model(self) -> None:
        deadlines = [int(v) for v in self.client.hvals(self.key)]
        live = sum(1 for d in deadlines if d > self.now)
        assert live == self._live_in_model()
        assert live <= LIMIT  # even when Redis lost its data while connections were established

    @invariant()
    def the_worker_set_lists_only_what_the_worker_holds(self) -> None:
        members = {m.decode() for m in self.client.smembers(self.worker_key)}  # type: ignore[union-attr]
        assert members <= {f"{c} {self.user}" for c in self.known}

    def teardown(self) -> None:
        self.listener.close()
        self.client.delete(self.key, self.worker_key, self.recovery_key, f"{self.worker_key}-other")
        self.client.close()


def test_lease_scripts_against_a_model(redis_server: RedisServer) -> None:
    LeaseScripts.server = redis_server
    runner = LeaseScripts.TestCase
    runner.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
    runner().runTest()


async def test_release_worker_finds_a_lease_taken_after_the_tag_set_lapsed(
    client: aioredis.Redis, redis_server: RedisServer, user: str
) -> None:
    """A worker idle for a lease time (no lease, so no beat renews its tag set) lets the set lapse;
    its next lease in the same slot must name the tag again, or a crash before the next beat leaves
    that lease out of the master's release."""
    worker = f"w-{user}"
    limiter = _limiter(client, worker, lease_ttl=0.5)  # heartbeat not started: the crash comes first
    lease = await limiter.acquire(user, _never_lost)
    assert lease is not None
    await limiter.release(lease)

    async def tag_set_lapsed() -> bool:  # no lease left for a beat to renew it with
        return not await client.exists(f"ws:worker:{worker}")

    await eventually(tag_set_lapsed, what="the tag set to lapse")
    assert await limiter.acquire(user, _never_lost) is not None
    with redis.Redis.from_url(redis_server.url) as sync_client:
        assert release_worker(sync_client, "ws", worker) == 1
    assert await client.hlen(leases_key(user)) == 0


async def test_release_worker_frees_leases_listed_under_the_old_format(
    client: aioredis.Redis, redis_server: RedisServer, user: str
) -> None:
    """A worker of the previous release listed "connection-id user" in ``ws:worker:<id>`` itself,
    the key that now lists tags: a master upgraded first must still free those places at once."""
    worker = f"w-{user}"
    connection_id = f"{worker}:1"
    await client.hset(leases_key(user), connection_id, int(time.time() * 1000) + 30_000)
    await client.sadd(f"ws:worker:{worker}", f"{connection_id} {user}")
    with redis.Redis.from_url(redis_server.url) as sync_client:
        assert release_worker(sync_client, "ws", worker) == 1
    assert await client.hlen(leases_key(user)) == 0
    assert not await client.exists(f"ws:worker:{worker}")
