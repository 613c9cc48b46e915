"""Places given back while Redis pauses writes or hangs: a release or an abandoned acquire that
Redis did not confirm is retried until it is, so a user with no socket anywhere is never told
4029, and a drain closes its sockets on time whatever Redis does."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer, leases_key, live_leases
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

# Longer than the gateway's Redis command timeout (5 s): every command in flight times out.
HANG = 7.0


def _limit_one(**env: str) -> dict[str, str]:
    # A probe that would reconnect the pub/sub connection only adds noise to what is tested here.
    return {"WEBSOCKET_MAX_CONNECTIONS_PER_USER": "1", "REDIS_PROBE_INTERVAL": "30", **env}


async def _warm(gateway: Gateway, client: redis.Redis) -> None:
    """One admission and close: the scripts are loaded and a pooled connection is connected and
    idle, as in any running gateway (a new connection's CLIENT SETNAME would wait on Redis
    instead, and the command after it would never be written)."""
    warm_user = f"warm-{uuid.uuid4().hex[:10]}"
    ws = await admit(gateway.ws_url, warm_user)
    assert isinstance(ws, ClientConnection)
    await ws.close()
    await eventually(
        in_thread(lambda: client.exists(leases_key(warm_user)) == 0), timeout=10, what="the warm-up release"
    )


async def _admitted_without_4029(gateway: Gateway, user: str, timeout: float = 10) -> ClientConnection:
    """Admitted within ``timeout``; a 1013 while Redis comes back is retried, a 4029 fails."""
    admitted: list[ClientConnection] = []

    async def once() -> bool:
        outcome = await admit(gateway.ws_url, user)
        assert outcome != 4029, f"{user}, with no socket anywhere, was refused 4029"
        if isinstance(outcome, ClientConnection):
            admitted.append(outcome)
        return bool(admitted)

    await eventually(once, timeout=timeout, interval=0.2, what=f"{user} to be admitted")
    return admitted[0]


async def test_a_release_that_times_out_in_a_write_pause_is_retried_until_redis_takes_it(
    own_redis: RedisServer, user: str
) -> None:
    """CLIENT PAUSE WRITE (what a planned failover does on the old master) for longer than the
    command timeout while the user closes its only socket: the release times out, and is sent
    again until Redis runs it, so the place is free as soon as writes resume (the lease time
    here is 30 s)."""
    with running_gateway(own_redis.url, workers=1, **_limit_one()) as gateway:
        client = own_redis.client()
        waiter = redis.Redis(port=own_redis.port, socket_timeout=HANG + 10)
        try:
            await _warm(gateway, client)
            ws = await admit(gateway.ws_url, user)
            assert isinstance(ws, ClientConnection)
            client.execute_command("CLIENT", "PAUSE", int(HANG * 1000), "WRITE")
            await ws.close()
            # A write of the test's own returns once writes resume.
            await asyncio.to_thread(waiter.set, f"after-pause-{user}", 1, ex=60)
            resumed = time.monotonic()
            await eventually(
                in_thread(lambda: live_leases(client, user) == 0), timeout=4, what="the place to be free"
            )
            again = await _admitted_without_4029(gateway, user)
            await again.close()
            assert time.monotonic() - resumed < 10
        finally:
            client.close()
            waiter.close()


async def test_an_acquire_redis_runs_late_leaves_no_place_for_another_host(
    own_redis: RedisServer, user: str
) -> None:
    """Redis stalls past the command timeout during an admission on host A (1013): the acquire
    was written, and Redis runs it when it resumes. Its place is released then, not at A's next
    beat (30 s apart here): the user is admitted on host B at once, never refused 4029."""
    env = _limit_one(WEBSOCKET_LEASE_TTL="90")
    with (
        running_gateway(own_redis.url, workers=1, **env) as a,
        running_gateway(own_redis.url, workers=1, **env) as b,
    ):
        client = own_redis.client()
        try:
            await _warm(a, client)
            with own_redis.paused():
                refused = await asyncio.wait_for(admit(a.ws_url, user), 15)
            assert refused == 1013
            await eventually(
                in_thread(lambda: live_leases(client, user) == 0),
                timeout=4,
                what="the late place to be released",
            )
            ws = await _admitted_without_4029(b, user)
            await ws.close()
        finally:
            client.close()


async def _open(gateway: Gateway, user: str) -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}", ping_interval=None, open_timeout=20)


async def _open_all(gateway: Gateway, users: list[str]) -> list[ClientConnection]:
    limit = asyncio.Semaphore(25)

    async def one(user: str) -> ClientConnection:
        async with limit:
            return await _open(gateway, user)

    return await asyncio.gather(*(one(user) for user in users))


async def _close_code(ws: ClientConnection, closes: list[tuple[float, int | None]]) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    closes.append((time.monotonic(), closed.value.rcvd.code if closed.value.rcvd else None))


@contextlib.contextmanager
def _hanging(server: RedisServer, how: str, seconds: float) -> Iterator[None]:
    """Redis answers no write for ``seconds``: a planned failover's CLIENT PAUSE WRITE (a paused
    command whose client gave up is dropped), or a stopped process (SIGSTOP: what was written
    runs when it resumes, but no new connection gets through its handshake meanwhile)."""
    if how == "pause":
        with server.client() as client:
            client.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "WRITE")
        yield
        with redis.Redis(port=server.port, socket_timeout=seconds + 10) as waiter:
            waiter.set("after-pause", 1, ex=60)  # returns once writes resume
    else:
        with server.paused():
            yield
            time.sleep(seconds)  # the fault's length, not a synchronisation


@pytest.mark.parametrize("how", ["pause", "stop"])
async def test_a_deploy_while_redis_hangs_leaves_no_user_refused_on_the_other_host(
    own_redis: RedisServer, how: str
) -> None:
    """SIGTERM to host A while Redis hangs past the command timeout, Redis back while A still
    drains: the places of the sockets A closed meanwhile (1012) are released once Redis answers,
    not when they lapse (lease time 60 s) nor when A's workers exit, and each of those users is
    admitted on host B at once, never refused 4029."""
    window = 14.0
    env = _limit_one(WEBSOCKET_LEASE_TTL="60")
    with (
        running_gateway(own_redis.url, workers=2, WEBSOCKET_DRAIN_WINDOW=str(window), **env) as a,
        running_gateway(own_redis.url, workers=1, **env) as b,
    ):
        client = own_redis.client()
        try:
            users = [f"deploy-{i}-{uuid.uuid4().hex[:8]}" for i in range(60)]
            sockets = await _open_all(a, users)
            closes: list[tuple[float, int | None]] = []
            waiters = [asyncio.create_task(_close_code(ws, closes)) for ws in sockets]
            closed_by: dict[ClientConnection, str] = dict(zip(sockets, users, strict=True))
            assert a.process is not None
            hang = _hanging(own_redis, how, HANG)
            hang.__enter__()
            try:
                a.process.send_signal(signal.SIGTERM)
            finally:
                await asyncio.to_thread(hang.__exit__, None, None, None)
            gone = [closed_by[ws] for ws in sockets if ws.close_code is not None]
            assert len(gone) >= 10, f"only {len(gone)} sockets closed while Redis hung"

            def released() -> bool:
                return all(live_leases(client, user) == 0 for user in gone)

            await eventually(in_thread(released), timeout=3, what="the closed sockets' places to be released")
            on_b = [await _admitted_without_4029(b, user, timeout=5) for user in gone]
            assert a.process.poll() is None, "host A exited: its master's release was not what was tested"
            await asyncio.wait_for(asyncio.gather(*waiters), window + 10)
            assert {code for _, code in closes} == {1012}
            await asyncio.gather(*(ws.close() for ws in on_b))
        finally:
            client.close()


async def test_a_drain_while_redis_hangs_closes_on_time_and_exits_within_the_window(
    own_redis: RedisServer,
) -> None:
    """SIGTERM while Redis hangs for the whole drain: every socket closes with 1012, within the
    window and a second, the workers log no error and exit a few seconds after the window (their
    releases are left to lapse, or to gunicorn's master once Redis answers)."""
    window = 4.0
    with running_gateway(
        own_redis.url, workers=2, WEBSOCKET_DRAIN_WINDOW=str(window), **_limit_one()
    ) as gateway:
        users = [f"hang-{i}-{uuid.uuid4().hex[:8]}" for i in range(100)]
        sockets = await _open_all(gateway, users)
        closes: list[tuple[float, int | None]] = []
        waiters = [asyncio.create_task(_close_code(ws, closes)) for ws in sockets]
        process = gateway.process
        assert process is not None
        workers = gateway.worker_pids()
        with own_redis.paused():
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*waiters), window + 15)
            await eventually(
                in_thread(lambda: all(_exited(pid) for pid in workers)),
                timeout=window + 15,
                what="the workers to exit",
            )
            workers_exited_in = time.monotonic() - stopped_at
            exit_code = await asyncio.to_thread(process.wait, 40)
        codes = sorted({code for _, code in closes}, key=str)
        assert codes == [1012], f"close codes {codes}"
        times = sorted(t - stopped_at for t, _ in closes)
        assert times[0] < 1.5, f"the first close came {times[0]:.1f} s after SIGTERM"
        assert times[-1] <= window + 1.5, f"the last close came {times[-1]:.1f} s after SIGTERM"
        log = gateway.log()
        assert "Traceback" not in log and " ERROR " not in log and "[ERROR]" not in log, log[-3000:]
        assert exit_code == 0
        assert workers_exited_in < window + 5, f"workers exited {workers_exited_in:.1f} s after SIGTERM"


def _exited(pid: int) -> bool:
    """Gone, or a zombie its master has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
