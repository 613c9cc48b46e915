"""The per-user limit across two gunicorn "hosts" sharing one Redis, under races and crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from harness.clients import admit, admit_or_refusal
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer, leases_key, live_leases
from harness.waiting import eventually, in_thread

LIMIT = 5


async def attempt(gateway: Gateway, user: str) -> ClientConnection | int:
    return await admit(gateway.ws_url, user)


def worker_pid(ws: ClientConnection) -> int:
    return int(ws.response.headers["x-gateway-worker"].rsplit("-", 1)[1])


def live_places(client: redis.Redis, user: str) -> int:
    return live_leases(client, user)


@pytest.fixture(scope="module")
def hosts(redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    with (
        running_gateway(redis_server.url, workers=3) as a,
        running_gateway(redis_server.url, workers=3) as b,
    ):
        yield a, b


async def test_limit_holds_across_two_hosts_and_a_close_frees_one_place(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    """Alternating hosts: exactly the limit is admitted, the next is refused on either host."""
    a, b = hosts
    admitted = []
    for i in range(LIMIT):
        result = await attempt((a, b)[i % 2], user)
        assert isinstance(result, ClientConnection), f"connection {i} refused with {result}"
        admitted.append(result)
    assert await attempt(a, user) == 4029
    assert await attempt(b, user) == 4029
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "connections", user],
        env={**os.environ, "REDIS_URL": redis_server.url},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listed.splitlines()[-1] == f"{LIMIT} live connection(s) for {user}"
    holders = {ws.response.headers["x-gateway-worker"] for ws in admitted}
    assert {line.split(":")[0] for line in listed.splitlines()[:-1]} == holders
    await admitted.pop().close()
    # A close the client starts is answered (and the socket closed) before the worker's release
    # reaches Redis: wait for it, or under load the replacement can race it.
    client = redis_server.client()
    await eventually(
        in_thread(lambda: live_places(client, user) == LIMIT - 1),
        timeout=10,
        what="the closed connection's place to be released",
    )
    client.close()
    replacement = await attempt(a, user)
    assert isinstance(replacement, ClientConnection)
    assert await attempt(b, user) == 4029
    await asyncio.gather(*(ws.close() for ws in [*admitted, replacement]))


async def test_a_hundred_simultaneous_attempts_admit_exactly_the_limit(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    """100 concurrent attempts over six workers on two hosts, 20 times: never more than the limit.
    The rest are refused as at the limit, or, beyond the user's share of a worker's handshakes
    (as many as its limit), before Redis with 1013 too_many_handshakes."""
    client = redis_server.client()
    for round_ in range(20):
        results = await asyncio.gather(*(admit_or_refusal(hosts[i % 2].ws_url, user) for i in range(100)))
        admitted = [r for r in results if isinstance(r, ClientConnection)]
        refused = [r for r in results if not isinstance(r, ClientConnection)]
        assert len(admitted) == LIMIT, f"round {round_}"
        assert set(refused) <= {(4029, "user_limit"), (1013, "too_many_handshakes")}, set(refused)
        await asyncio.gather(*(ws.close() for ws in admitted))
        await eventually(
            in_thread(lambda: live_places(client, user) == 0), timeout=5, what="places to be released"
        )
    client.close()


async def test_a_killed_workers_places_come_back_at_once(
    hosts: tuple[Gateway, Gateway], redis_server: RedisServer, user: str
) -> None:
    """kill -9 of a worker: the master releases its leases, long before they would lapse."""
    a, _ = hosts
    client = redis_server.client()
    sockets = [await attempt(a, user) for _ in range(LIMIT)]
    assert all(isinstance(ws, ClientConnection) for ws in sockets)
    open_sockets = [ws for ws in sockets if isinstance(ws, ClientConnection)]
    victim = worker_pid(open_sockets[0])
    on_victim = [ws for ws in open_sockets if worker_pid(ws) == victim]
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    await eventually(
        in_thread(lambda: live_places(client, user) == LIMIT - len(on_victim)),
        timeout=3,
        what="leases released",
    )
    assert time.monotonic() - started < 3  # the lease time here is 30 s
    for _ in on_victim:
        again = await attempt(a, user)
        assert isinstance(again, ClientConnection)
        open_sockets.append(again)
    assert await attempt(a, user) == 4029
    await asyncio.to_thread(a.wait_all_workers_ready)
    assert victim not in a.worker_pids()
    await asyncio.gather(*(ws.close() for ws in open_sockets))
    client.close()


async def test_a_killed_hosts_places_come_back_within_the_lease_time(
    redis_server: RedisServer, user: str
) -> None:
    """kill -9 of a whole gunicorn: its places count until their leases lapse, then free up."""
    lease = 3.0
    with (
        running_gateway(redis_server.url, workers=2, WEBSOCKET_LEASE_TTL=str(lease)) as doomed,
        running_gateway(redis_server.url, workers=2, WEBSOCKET_LEASE_TTL=str(lease)) as survivor,
    ):
        on_doomed = [await attempt(doomed, user) for _ in range(3)]
        on_survivor = [await attempt(survivor, user) for _ in range(2)]
        assert all(isinstance(ws, ClientConnection) for ws in on_doomed + on_survivor)
        assert doomed.process is not None
        pids = [doomed.process.pid, *doomed.worker_pids()]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert await attempt(survivor, user) == 4029
        assert time.monotonic() - killed_at < lease

        async def admitted_again() -> ClientConnection:
            while True:
                result = await attempt(survivor, user)
                if isinstance(result, ClientConnection):
                    return result

        # Each dead lease lapses at its own deadline, at most one lease time after the kill.
        back = [await asyncio.wait_for(admitted_again(), lease * 3) for _ in on_doomed]
        # The slack covers the last refusal's retries and three admissions on a loaded machine; a
        # place that outlived its lease by another beat or lease would still be late.
        assert time.monotonic() - killed_at <= lease + 1.5
        assert await attempt(survivor, user) == 4029
        for ws in [*on_survivor, *back]:
            assert isinstance(ws, ClientConnection)
            await ws.close()


async def test_redis_down_refuses_new_connections_and_keeps_open_ones(user: str) -> None:
    """Redis stopped: new connections get 1013, open ones stay; Redis back: admission resumes."""
    server = RedisServer()
    server.start()
    try:
        with running_gateway(server.url, workers=2) as gateway:
            open_sockets = [await attempt(gateway, user) for _ in range(3)]
            assert all(isinstance(ws, ClientConnection) for ws in open_sockets)
            server.stop()
            assert await attempt(gateway, user) == 1013
            for ws in open_sockets:
                assert isinstance(ws, ClientConnection)
                await ws.send('{"type":"ping"}')
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            await asyncio.to_thread(server.start)

            async def admitted() -> ClientConnection:
                while True:
                    result = await attempt(gateway, user)
                    if isinstance(result, ClientConnection):
                        return result

            fresh = await asyncio.wait_for(admitted(), 20)
            client = server.client()
            assert client.publish(f"ws:{user}", b'{"back":true}') >= 1
            assert json.loads(await asyncio.wait_for(fresh.recv(), 10)) == {"back": True}
            client.close()
            for ws in [*open_sockets, fresh]:
                assert isinstance(ws, ClientConnection)
                await ws.close()
    finally:
        server.close()


async def test_an_admission_that_times_out_on_a_paused_redis_leaves_no_place_behind(
    own_redis: RedisServer,
) -> None:
    """Redis stalls (SIGSTOP here; a long fork, a failover, a network stall in production) for
    longer than the command timeout (5 s). The client is told 1013, but its acquire script was
    already written on a connected pooled connection, and Redis runs it when it resumes. That
    place must not outlive the refusal: the user, who holds no connection anywhere, is admitted
    again at once (never 4029, under a limit of 1), and no worker's set keeps the lost lease."""
    with running_gateway(
        own_redis.url, workers=1, WEBSOCKET_MAX_CONNECTIONS_PER_USER="1", REDIS_PROBE_INTERVAL="30"
    ) as gateway:
        client = own_redis.client()
        try:
            # One admission and close first: the acquire script is loaded and a pooled connection
            # is connected and idle, as in any running gateway.
            warm_user = f"warm-{uuid.uuid4().hex[:10]}"
            warm = await attempt(gateway, warm_user)
            assert isinstance(warm, ClientConnection)
            await warm.close()
            await eventually(
                in_thread(lambda: client.hlen(leases_key(warm_user)) == 0),
                timeout=10,
                what="the warm-up lease to be released",
            )

            user = f"ghost-{uuid.uuid4().hex[:10]}"
            with own_redis.paused():
                refused = await asyncio.wait_for(attempt(gateway, user), 15)
            assert refused == 1013

            async def admitted_again() -> bool:
                outcome = await attempt(gateway, user)
                if isinstance(outcome, ClientConnection):
                    await outcome.close()
                    return True
                held = await in_thread(lambda: live_leases(client, user))()
                assert outcome != 4029, f"a user with no connection refused 4029; {held} live lease(s)"
                return False  # 1013 while Redis comes back: retry

            await eventually(admitted_again, timeout=15, interval=0.2, what="the user to be admitted")

            def nothing_left() -> bool:
                members = [m for key in client.scan_iter("{*}:worker:*") for m in client.smembers(key)]
                return live_leases(client, user) == 0 and not any(user.encode() in m for m in members)

            await eventually(in_thread(nothing_left), timeout=10, what="no lease, no worker-set member")
        finally:
            client.close()


async def test_after_redis_loses_its_data_established_connections_keep_their_places(user: str) -> None:
    """FLUSHALL (Redis restarted without persistence) under limit 1: the worker holding the
    established connection refuses a newcomer at once (it knows its own places); a newcomer on
    another host gets in, the established connection is not closed at its next renewal, the
    newcomer is (4029 user_limit, within a beat of the established place coming back), and further
    newcomers are refused."""
    server = RedisServer()
    server.start()
    try:
        limits = {"WEBSOCKET_MAX_CONNECTIONS_PER_USER": "1", "WEBSOCKET_LEASE_TTL": "1.5"}
        with (
            running_gateway(server.url, workers=1, **limits) as gateway,
            running_gateway(server.url, workers=1, **limits) as other_host,
        ):
            established = await attempt(gateway, user)
            assert isinstance(established, ClientConnection)
            client = server.client()
            # The established worker is held while Redis forgets and the newcomer comes: its beat
            # (every 0.5 s) would otherwise race the newcomer's admission and often win it.
            (worker,) = gateway.worker_pids()
            os.kill(worker, signal.SIGSTOP)
            try:
                client.flushall()
                newcomer = await attempt(other_host, user)
            finally:
                os.kill(worker, signal.SIGCONT)
            assert isinstance(newcomer, ClientConnection), "Redis forgot the place: the newcomer fits"
            assert await attempt(gateway, user) == 4029  # it knows its own places
            # The next beat (every 0.5 s here) takes the established place back and ends the newcomer.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(newcomer.recv(), 10)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4029, "user_limit")
            assert live_places(client, user) == 1
            await established.send('{"type":"ping"}')
            assert json.loads(await asyncio.wait_for(established.recv(), 10)) == {"type": "pong"}
            assert await attempt(other_host, user) == 4029
            await established.close()
            await eventually(
                in_thread(lambda: live_places(client, user) == 0), timeout=10, what="the place released"
            )
            again = await attempt(other_host, user)
            assert isinstance(again, ClientConnection)
            await again.close()
            client.close()
    finally:
        server.close()
