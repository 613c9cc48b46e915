"""The lease scripts and the Limiter against a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

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


# The gateway's timeouts (gateway/redis_wiring.py): a reply lost across a restart raises instead
# of holding the test until pytest-timeout (a 300 s hang once in a loaded CI run).
_AS_THE_GATEWAY = {"socket_connect_timeout": 2, "socket_timeout": 5}


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
    """Nothing is written without a TTL: a lost host leaves nothing behind for ever. The worker's
    key lives a lease time; the user's hash an hour (its holders extend it at half of that)."""
    worker = f"w-{user}"
    limiter = _limiter(client, worker, lease_ttl=30)
    assert await limiter.acquire(user, _never_lost)
    assert 3_000_000 < await client.pttl(leases_key(user)) <= 3_600_000
    for key in (f"{{ws}}:worker:{worker}", f"ws:worker:{worker}"):
        assert 0 < await client.pttl(key) <= 30_000, key


def _holder(worker: str) -> str:
    """A worker's key on one Redis: while it lives, so do the worker's leases."""
    return f"{{ws}}:worker:{worker}"


async def test_a_dead_workers_places_stop_counting_once_its_key_lapses(
    client: aioredis.Redis, user: str
) -> None:
    """A worker that stops beating (killed with its host) loses its places within the lease time."""
    dead = _limiter(client, f"dead-{user}", lease_ttl=1.0)
    for _ in range(LIMIT):
        assert await dead.acquire(user, _never_lost)
    alive = _limiter(client, f"alive-{user}")
    started = time.monotonic()
    assert await alive.acquire(user, _never_lost) is None

    async def admitted() -> Lease | None:
        return await alive.acquire(user, _never_lost)

    await eventually(admitted, timeout=5, interval=0.05, what="a place once the dead worker's key lapsed")
    assert time.monotonic() - started < 1.0 + 1.0  # the lease time, and a margin for this machine
    assert await client.hlen(leases_key(user)) == 1, "the dead worker's fields were dropped on sight"


async def test_beats_keep_places_past_the_lease_time(client: aioredis.Redis, user: str) -> None:
    limiter = _limiter(client, f"w-{user}", lease_ttl=1.0)
    for _ in range(LIMIT):
        assert await limiter.acquire(user, _never_lost)
    other = _limiter(client, f"o-{user}")
    until = time.monotonic() + 2.5
    while time.monotonic() < until:  # two and a half lease times, beating as the worker does
        await limiter.beat()
        # Each refusal takes a quarter of a second (the at-limit retries): with this pause a beat
        # goes out every 0.3 s or so, leaving most of the 1 s lease for a stalled machine.
        assert await other.acquire(user, _never_lost) is None
        await asyncio.sleep(0.05)
    assert await client.exists(_holder(f"w-{user}"))


async def test_a_beat_costs_the_same_whatever_the_number_of_leases(
    redis_server: RedisServer, client: aioredis.Redis, user: str
) -> None:
    """The idle cost of a worker's places: a beat runs the same Redis commands (as Redis counts
    them, inside scripts too) for one lease as for three hundred of a hundred and fifty users."""
    monitor = redis_server.client()

    async def beat_cost(limiter: Limiter) -> int:
        before = command_calls(monitor)
        await limiter.beat()
        after = command_calls(monitor)
        return sum(after.values()) - sum(before.values())

    small = _limiter(client, f"small-{user}")
    assert await small.acquire(user, _never_lost)
    crowded = _limiter(client, f"crowded-{user}")
    for i in range(150):
        for _ in range(2):
            assert await crowded.acquire(f"{user}-{i}", _never_lost)
    assert await beat_cost(crowded) == await beat_cost(small) <= 8
    monitor.close()


async def test_a_beat_extends_a_users_hash_when_it_is_due(client: aioredis.Redis, user: str) -> None:
    limiter = _limiter(client, f"w-{user}")
    lease = await limiter.acquire(user, _never_lost)
    assert lease is not None
    await client.pexpire(leases_key(user), 60_000)  # half its life is past
    lease.extend_at = 0.0
    await limiter.beat()
    assert await client.pttl(leases_key(user)) > 3_500_000
    await client.pexpire(leases_key(user), 60_000)
    await limiter.beat()  # not due again for half an hour
    assert await client.pttl(leases_key(user)) <= 60_000


async def test_a_lapsed_workers_places_are_taken_again_or_its_connections_ended(
    redis_server: RedisServer, client: aioredis.Redis, user: str
) -> None:
    """A worker that could not reach Redis for longer than the lease: its key lapsed, and an
    admission dropped its place. Its next beat takes the place again if it is free, else ends the
    socket (4029)."""
    ended: list[str] = []
    worker = f"slow-{user}"
    slow = _limiter(client, worker, lease_ttl=0.5)
    kept = await slow.acquire(user, lambda: ended.append("kept"))
    assert kept is not None
    other = _limiter(client, f"o-{user}")

    async def lapsed() -> bool:
        return not await client.exists(_holder(worker))

    await eventually(lapsed, timeout=5, what="the slow worker's key to lapse")
    assert await other.acquire(user, _never_lost)
    assert not await client.hexists(leases_key(user), kept.connection_id)
    await slow.beat()
    assert ended == []
    assert await client.hexists(leases_key(user), kept.connection_id)
    with redis_server.client() as sync:
        assert live_leases(sync, user) == 2

    await eventually(lapsed, timeout=5, what="the slow worker's key to lapse again")
    for _ in range(LIMIT - 1):
        assert await other.acquire(user, _never_lost)
    await slow.beat()
    assert ended == ["kept"]
    assert kept.connection_id not in slow.leases


async def test_a_release_racing_a_reassertion_never_resurrects_the_lease(
    client: aioredis.Redis, user: str
) -> None:
    """2,000 leases re-asserted after Redis lost the worker's key; 20 connections close while
    that call is on its way: no place is left behind, so each of those users (limit 1) gets a
    place again at once."""
    worker = f"w-{user}"
    limiter = Limiter(client, "ws", worker, 1, 30)
    owners = [f"{user}-{i}" for i in range(2000)]
    leases: list[Lease] = []
    for start in range(0, len(owners), 100):
        batch = await asyncio.gather(*(limiter.acquire(o, _never_lost) for o in owners[start : start + 100]))
        leases += [lease for lease in batch if lease is not None]
    assert len(leases) == len(owners)
    other = Limiter(client, "ws", f"o-{user}", 1, 30)
    for lease in leases[:: len(leases) // 20][:20]:
        await client.delete(_holder(worker))
        beat = asyncio.create_task(limiter.beat())

        async def reasserting(beat: asyncio.Task[None] = beat) -> bool:
            return limiter._keeper.unsettled or beat.done()

        await eventually(reasserting, interval=0, what="the re-assertion to be on its way")
        await limiter.release(lease)
        await beat
        assert await other.acquire(lease.user_id, _never_lost) is not None, "a phantom place"


async def _restarted(server: RedisServer) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait()
    await asyncio.to_thread(server.start)


async def test_after_redis_loses_its_data_established_connections_keep_their_places(user: str) -> None:
    """Redis restarted without persistence, newcomers fill the empty hash, then the established
    worker beats: it finds its key gone and takes its places back, nobody established is closed,
    and the newcomers give way: their worker's next beat ends them (4029), and the user is back at
    the limit."""
    server = RedisServer()
    server.start()
    ended: list[str] = []
    # As the gateway's pool does: a command on a connection the restart made stale is repeated.
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client = aioredis.Redis.from_url(server.url, retry=retry, **_AS_THE_GATEWAY)
    try:
        established = _limiter(client, f"est-{user}")
        held = [await established.acquire(user, lambda: ended.append("established")) for _ in range(LIMIT)]
        await established.beat()
        await _restarted(server)
        newcomers = _limiter(client, f"new-{user}")
        admitted = [await newcomers.acquire(user, lambda: ended.append("newcomer")) for _ in range(LIMIT - 1)]
        assert all(admitted)
        await established.beat()
        assert ended == []
        for lease in held:
            assert lease is not None and await client.hexists(leases_key(user), lease.connection_id)
        assert await newcomers.acquire(user, _never_lost) is None
        await newcomers.beat()
        assert ended == ["newcomer"] * (LIMIT - 1)
        for lease in admitted:  # their connections close
            assert lease is not None
            await newcomers.release(lease)
        sync = server.client()
        try:
            assert live_leases(sync, user) == LIMIT
        finally:
            sync.close()
        await established.beat()
        assert len(established.leases) == LIMIT
    finally:
        await client.aclose()
        server.close()


async def test_after_redis_loses_its_data_a_user_never_stays_over_the_limit(user: str) -> None:
    """DESIGN.md 4.2 (the review's finding): limit 1, a newcomer admitted into the hash Redis
    emptied, then the established worker beats. Once both beats ran, one live lease and one
    open connection are left: the established one."""
    server = RedisServer()
    server.start()
    ended: list[str] = []
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))  # as gateway/app.py
    client = aioredis.Redis.from_url(server.url, retry=retry, **_AS_THE_GATEWAY)
    try:
        established = Limiter(client, "ws", f"est-{user}", 1, 30.0)
        assert await established.acquire(user, lambda: ended.append("established")) is not None
        await _restarted(server)
        newcomer = Limiter(client, "ws", f"new-{user}", 1, 30.0)
        arrived = await newcomer.acquire(user, lambda: ended.append("newcomer"))
        assert arrived is not None
        await established.beat()
        await newcomer.beat()
        assert ended == ["newcomer"]
        await newcomer.release(arrived)  # its connection closes
        sync = server.client()
        try:
            held = live_leases(sync, user)
        finally:
            sync.close()
        assert held == 1
    finally:
        await client.aclose()
        server.close()


async def test_an_admission_on_the_worker_that_lost_its_key_brings_the_others_back(user: str) -> None:
    """Redis lost its data and this worker's next admission comes first (it makes the worker's key
    again): the worker re-asserts its other places at once, before the next beat."""
    server = RedisServer()
    server.start()
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client = aioredis.Redis.from_url(server.url, retry=retry, **_AS_THE_GATEWAY)
    try:
        limiter = Limiter(client, "ws", f"w-{user}", 2, 30.0)
        limiter.start()
        established = await limiter.acquire(user, _never_lost)
        assert established is not None
        await _restarted(server)
        assert await limiter.acquire(f"{user}-b", _never_lost) is not None

        async def back() -> bool:
            return bool(await client.hexists(leases_key(user), established.connection_id))

        await eventually(back, timeout=5, what="the established place to be re-asserted")
        await limiter.stop()
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
    assert not await client.exists(f"ws:worker:{worker}", _holder(worker))


async def test_redis_out_of_reach_fails_closed(user: str) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    limiter = Limiter(dead, "ws", f"w-{user}", LIMIT, 30)
    with pytest.raises(LimiterUnavailable):
        await limiter.acquire(user, _never_lost)
    assert limiter.leases == {}
    await dead.aclose()


HELD = 2**52
LEGACY = Path(__file__).parent / "legacy_lua"


def legacy_script(name: str) -> str:
    """A lease script of the previous release (per-lease deadlines), as its workers still run it
    during a rolling upgrade."""
    return (LEGACY / "_prelude.lua").read_text() + (LEGACY / name).read_text()


class LeaseScripts(RuleBasedStateMachine):
    """Any interleaving of admissions (this worker's, another's, and a worker of the previous
    release's, which writes deadlines), beats, re-assertions, releases (also racing a
    re-assertion), disconnects, clock jumps, a worker's key lapsing, a worker dying and Redis
    losing its data, checked against a model of the hash: a refusal only ever happens at the
    limit, a released place never comes back, and the live count never exceeds the limit, even
    when Redis lost its data while connections were established (the newcomers give way)."""

    server: RedisServer

    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis(port=self.server.port)
        load = self.client.register_script
        self.acquire_script = load(LuaScript.load("acquire.lua").text)
        self.beat_script = load(LuaScript.load("beat.lua").text)
        self.reassert_script = load(LuaScript.load("reassert.lua").text)
        self.release_script = load(LuaScript.load("release.lua").text)
        self.disconnect_script = load(LuaScript.load("disconnect.lua").text)
        self.online_script = load(LuaScript.load("online.lua").text)
        self.old_acquire_script = load(legacy_script("acquire.lua"))
        self.user = uuid.uuid4().hex
        # A worker holding the user, as far as the disconnect script's PUBLISH can tell.
        self.listener = self.client.pubsub()
        self.listener.subscribe(f"ws:{self.user}")
        assert self.listener.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        self.key = f"{{ws:{self.user}}}:conns"
        self.recovery_key = f"{{ws:{self.user}}}:recovery"
        self.revoked_key = f"{{ws:{self.user}}}:revoked"
        # The workers' keys are shared by every user on one Redis: each run has its own workers.
        run = uuid.uuid4().hex[:8]
        self.w, self.o = f"w{run}", f"o{run}"
        self.old_list = f"{{ws:{self.user}}}:worker:old{run}"
        self.now = 1_000_000
        self.values: dict[str, int] = {}  # the hash, as Redis should hold it
        self.members: dict[str, set[str]] = {self.w: set(), self.o: set()}  # each worker's key
        self.ended: dict[str, dict[str, str]] = {self.w: {}, self.o: {}}
        self.marks: dict[str, int] = {}  # the recovery hash
        self.known: list[str] = []  # what this worker holds, in admission order
        self.lapsed = False  # this worker's key lapsed since Redis last confirmed it
        self.must_reassert = False  # an admission made this worker's key again over held leases
        self.count = 0

    def _keys(self) -> list[str]:
        holders = [f"{{ws}}:worker:{worker}" for worker in (self.w, self.o)]
        return [self.key, self.recovery_key, self.old_list, *holders, *(f"{h}:ended" for h in holders)]

    @initialize()
    def clean(self) -> None:
        self.client.delete(*self._keys())

    def _holder(self, conn: str) -> str:
        return conn.rpartition(":")[0]

    def _is_live(self, conn: str, value: int) -> bool:
        if value >= HELD:
            return bool(self.members.get(self._holder(conn)))
        return value > self.now

    def _live(self, excluding: str = "") -> int:
        return sum(1 for c, v in self.values.items() if c != excluding and v >= 0 and self._is_live(c, v))

    def _prune(self, excluding: str) -> None:
        """What live_leases drops: dead leases and spent tombstones, other than ``excluding``."""
        self.values = {
            c: v
            for c, v in self.values.items()
            if c == excluding or (v >= 0 and self._is_live(c, v)) or (v < 0 and -v > self.now)
        }

    def _new_conn(self, worker: str) -> str:
        self.count += 1
        return f"{worker}:{self.count}"

    def _acquire(self, conn: str, worker: str) -> bool:
        # A token issued after every disconnect: revocation is tests/test_revocation.py's.
        taken, live, now, _, created = self.acquire_script(
            keys=[self.key, f"{{ws}}:worker:{worker}", self.revoked_key],
            args=[self.now, conn, self.user, LIMIT, LEASE_MS, 2**52, 3_600_000, "ws"],
        )
        assert now == self.now
        self._prune(excluding=conn)
        released = self.values.get(conn, 0) < 0  # an abandoned acquire released first: never taken
        expected = self._live(excluding=conn) < LIMIT and not released
        assert bool(taken) == expected
        if not taken:
            assert live >= LIMIT or released
            return False
        assert bool(created) == (not self.members[worker])
        self.values[conn] = HELD + self.now
        self.members[worker].add(conn)
        return True

    @rule()
    def acquire(self) -> None:
        conn = self._new_conn(self.w)
        had_key = bool(self.members[self.w])
        if self._acquire(conn, self.w):
            if not had_key and self.known:
                self.must_reassert = True  # the limiter's Keeper.took
            elif had_key or not self.known:
                self.lapsed = self.lapsed and not had_key
            self.known.append(conn)

    @rule(count=st.integers(min_value=1, max_value=LIMIT))
    def another_worker_admits(self, count: int) -> None:
        """Newcomers on a worker that is alive until it dies (below), e.g. into the hash Redis
        emptied: an established place restored later makes them give way."""
        for _ in range(count):
            self._acquire(self._new_conn(self.o), self.o)

    @rule()
    def a_worker_of_the_previous_release_admits(self) -> None:
        """Its script counts every held place as live (a deadline far ahead), and its deadline
        counts for the new scripts until it passes."""
        conn = self._new_conn("old")
        taken, _, _, _ = self.old_acquire_script(
            keys=[self.key, self.old_list, self.revoked_key],
            args=[self.now, conn, self.user, LIMIT, LEASE_MS, 2**52],
        )
        self.values = {c: v for c, v in self.values.items() if v > self.now or (v < 0 and -v > self.now)}
        expected = sum(1 for v in self.values.values() if v > self.now) < LIMIT
        assert bool(taken) == expected
        if taken:
            self.values[conn] = self.now + LEASE_MS

    def _reassert(self, held: list[str]) -> None:
        flag = "" if self.lapsed else "1"
        now, lost, revoked = self.reassert_script(
            keys=[f"{{ws}}:worker:{self.w}"] + [self.key, self.recovery_key] * len(held),
            args=[self.now, LIMIT, LEASE_MS, flag, 3_600_000, "ws", *(f"{c} {self.user}" for c in held)],
        )
        assert now == self.now
        expected_lost, expected_revoked = [], []
        for conn in held:
            value = self.values.get(conn)
            if value is not None and value >= 0:
                self.members[self.w].add(conn)
            elif value is not None:
                self.members[self.w].discard(conn)
                (expected_lost if self.marks.get(conn, 0) < 0 else expected_revoked).append(conn)
            elif flag and self._restored_live(excluding=conn) < LIMIT:
                self._take(conn)
                self.marks[conn] = self.now + LEASE_MS
                self._give_way()
            elif not flag and (self._prune(excluding=conn) or self._live(excluding=conn) < LIMIT):
                self._take(conn)
            else:
                self.members[self.w].discard(conn)
                expected_lost.append(conn)
        assert [x.decode() for x in lost] == expected_lost
        assert [x.decode() for x in revoked] == expected_revoked
        for conn in [*expected_lost, *expected_revoked]:
            if conn in self.known:
                self.known.remove(conn)  # the worker ends it (4029 or 4003) and forgets it
        self.lapsed = self.must_reassert = False

    def _take(self, conn: str) -> None:
        self.values[conn] = HELD + self.now
        self.members[self.w].add(conn)

    def _restored_live(self, excluding: str) -> int:
        return sum(
            1
            for c, v in self.values.items()
            if c != excluding and v >= 0 and self._is_live(c, v) and self.marks.get(c, 0) > self.now
        )

    def _give_way(self) -> None:
        """Over the limit once a place came back: the live places not restored, latest first."""

        def taken_at(value: int) -> int:
            return value - HELD if value >= HELD else value - LEASE_MS

        others = sorted(
            (
                (taken_at(v), c, v)
                for c, v in self.values.items()
                if v >= 0 and self._is_live(c, v) and self.marks.get(c, 0) <= self.now
            ),
            reverse=True,
        )
        for _, conn, value in others[: self._live() - LIMIT]:
            self.values[conn] = self.marks[conn] = -(self.now + LEASE_MS)
            if value >= HELD:
                self.ended[self._holder(conn)][conn] = "lost"

    @precondition(lambda self: self.known)
    @rule()
    def beat(self) -> None:
        """This worker's beat: its key kept, what scripts ended read; its leases re-asserted
        when the key was gone (the limiter's Keeper)."""
        holder = f"{{ws}}:worker:{self.w}"
        alive, missing, ended = self.beat_script(
            keys=[holder, f"{holder}:ended", self.key], args=[LEASE_MS, 3_600_000]
        )
        assert bool(alive) == bool(self.members[self.w])
        if alive:
            assert missing == 0
            told = dict(zip([x.decode() for x in ended[::2]], [x.decode() for x in ended[1::2]], strict=True))
            assert told == self.ended[self.w]
            self.ended[self.w] = {}
            for conn in told:
                if conn in self.known:
                    self._release(conn, tombstone=False)  # its connection ends, and gives the place back
        if (not alive or self.must_reassert) and self.known:
            self._reassert(list(self.known))

    def _release(self, conn: str, tombstone: bool) -> None:
        keep = LEASE_MS if tombstone else 0
        self.release_script(
            keys=[self.key, f"{{ws}}:worker:{self.w}"], args=[self.now, conn, self.user, keep]
        )
        if tombstone:
            self.values[conn] = -(self.now + LEASE_MS)
        else:
            self.values.pop(conn, None)
        self.members[self.w].discard(conn)
        self.known.remove(conn)

    @precondition(lambda self: self.known)
    @rule(data=st.data(), tombstone=st.booleans())
    def release(self, data: st.DataObject, tombstone: bool) -> None:
        """No re-assertion on its way (the worker would leave no tombstone), or one settled."""
        self._release(data.draw(st.sampled_from(self.known)), tombstone)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def release_racing_a_reassertion(self, data: st.DataObject) -> None:
        """The re-assertion was sent with the connection in it, but Redis runs the release first."""
        snapshot = list(self.known)
        self._release(data.draw(st.sampled_from(snapshot)), tombstone=True)
        self._reassert(snapshot)

    @rule(release_first=st.booleans())
    def abandoned_acquire(self, release_first: bool) -> None:
        """The worker gave up waiting for an acquire (a timeout, a cancelled handshake) and
        releases that id for a lease time; Redis runs the two in either order."""
        ghost = self._new_conn(self.w)
        if release_first:
            self.known.append(ghost)
            self._release(ghost, tombstone=True)
            self._acquire(ghost, self.w)
        elif self._acquire(ghost, self.w):
            self.known.append(ghost)
            self._release(ghost, tombstone=True)

    @rule(data=st.data(), one=st.booleans())
    def disconnect(self, data: st.DataObject, one: bool) -> None:
        """Every connection of the user, or one: their places become tombstones whatever the
        worker does next, and each live holder of this release is told."""
        target = data.draw(st.sampled_from(sorted(self.values))) if one and self.values else ""
        named = [c for c, v in self.values.items() if (not target or c == target) and v >= 0]
        live = [c for c in named if self._is_live(c, self.values[c])]
        reached = self.disconnect_script(
            keys=[self.key, self.revoked_key],
            args=[self.now, f"ws:{self.user}", b"\xffCdisconnect", target, 3 * LEASE_MS, "", LEASE_MS, "ws"],
        )
        assert reached == len(live)
        for conn in live:
            if self.values[conn] >= HELD:
                self.ended[self._holder(conn)][conn] = "revoked"
        for conn in named:
            self.values[conn] = -(self.now + 3 * LEASE_MS)

    @rule(ms=st.integers(min_value=0, max_value=2 * LEASE_MS))
    def clock_jumps(self, ms: int) -> None:
        self.now += ms

    @rule()
    def this_workers_key_lapses(self) -> None:
        """It could not reach Redis for a lease time: its places stop counting meanwhile."""
        self.client.delete(f"{{ws}}:worker:{self.w}")
        self.members[self.w] = set()
        self.lapsed = True

    @rule()
    def the_other_worker_dies(self) -> None:
        self.client.delete(f"{{ws}}:worker:{self.o}")
        self.members[self.o] = set()

    @rule(newcomers=st.integers(min_value=0, max_value=LIMIT))
    def redis_loses_its_data(self, newcomers: int) -> None:
        """Then, as often happens, newcomers fill the emptied hash before the next beat."""
        self.client.delete(*self._keys())  # all these scripts touch: a FLUSHALL to them
        self.values.clear()
        self.marks.clear()
        self.members = {self.w: set(), self.o: set()}
        self.ended = {self.w: {}, self.o: {}}
        if newcomers:
            self.another_worker_admits(newcomers)

    @invariant()
    def live_count_matches_the_model(self) -> None:
        live = self.online_script(keys=[self.key], args=[self.now, "ws"])
        assert live == self._live()
        assert live <= LIMIT  # even when Redis lost its data while connections were established

    @invariant()
    def the_worker_key_lists_only_what_the_worker_holds(self) -> None:
        members = {m.decode() for m in self.client.smembers(f"{{ws}}:worker:{self.w}")}  # type: ignore[union-attr]
        assert members == {f"{c} {self.user}" for c in self.members[self.w]}
        assert self.members[self.w] <= set(self.known)

    def teardown(self) -> None:
        self.listener.close()
        self.client.delete(*self._keys())
        self.client.close()


async def test_a_rolling_upgrade_shares_the_limit_with_workers_of_the_previous_release(
    redis_server: RedisServer, client: aioredis.Redis, user: str
) -> None:
    """Old workers write deadlines and renew them; new ones hold places while their key lives.
    Each side's scripts count the other's places, and every old script still runs over a hash
    holding both: nobody locked out (no script error), nobody closed."""
    sync = redis_server.client()
    old = {
        name: sync.register_script(legacy_script(f"{name}.lua")) for name in ("acquire", "renew", "online")
    }
    online = sync.register_script(LuaScript.load("online.lua").text)
    clock = Clock()
    new = _limiter(client, f"new-{user}", clock=clock)
    assert await new.acquire(user, _never_lost) is not None
    old_list = f"{{ws:{user}}}:worker:old-{user}"
    old_ids = [f"old-{user}:{i}" for i in range(LIMIT - 1)]
    for conn in old_ids:
        taken, *_ = old["acquire"](
            keys=[leases_key(user), old_list, f"{{ws:{user}}}:revoked"],
            args=[clock.ms, conn, user, LIMIT, 30_000, 2**52],
        )
        assert taken == 1
    # The user is at the limit for both sides.
    assert await new.acquire(user, _never_lost) is None
    refused, live, *_ = old["acquire"](
        keys=[leases_key(user), old_list, f"{{ws:{user}}}:revoked"],
        args=[clock.ms, f"old-{user}:x", user, LIMIT, 30_000, 2**52],
    )
    assert (refused, live) == (0, LIMIT)
    assert old["online"](keys=[leases_key(user)], args=[clock.ms]) == LIMIT
    assert online(keys=[leases_key(user)], args=[clock.ms, "ws"]) == LIMIT
    # An old worker's beat over the mixed hash: its places renewed, none lost or revoked.
    clock.ms += 20_000
    members = [f"{conn} {user}" for conn in old_ids]
    now, lost, revoked = old["renew"](
        keys=[old_list] + [leases_key(user), f"{{ws:{user}}}:recovery"] * len(members),
        args=[clock.ms, LIMIT, 30_000, clock.ms + 10_000, *members],
    )
    assert (now, lost, revoked) == (clock.ms, [], [])
    await new.beat()
    assert online(keys=[leases_key(user)], args=[clock.ms, "ws"]) == LIMIT
    # The old workers are replaced: once their deadlines pass, their places are free again.
    clock.ms += 30_001
    assert await new.acquire(user, _never_lost) is not None
    sync.close()


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
