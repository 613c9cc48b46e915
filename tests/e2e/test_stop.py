"""A stop is bounded: SIGTERM ends the master within 5 s without clients (within the drain window
plus 5 s with them) whatever Redis does, and a dead worker's leases are released in one step or
left to lapse with one log line."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from harness import hung_resolver
from harness.clients import admit
from harness.gateway_process import Gateway
from harness.hung_resolver import UNRESOLVABLE, HungResolver
from harness.paths import ROOT
from harness.process_tree import stop_then_kill
from harness.redis_server import RedisServer, leases_key, live_leases
from harness.waiting import eventually, in_thread, wait_for

# Seconds from SIGTERM to the master's exit that the contract allows without clients.
BOUND = 5.0
LAPSE_LINE = "they lapse on their own"


def stop_timed(gateway: Gateway) -> tuple[int, float]:
    """SIGTERM the master; its exit status and the seconds it took (killed after 60 s)."""
    process = gateway.process
    assert process is not None
    started = time.monotonic()
    code = stop_then_kill(process, 60)
    elapsed = time.monotonic() - started
    gateway.process = None
    return code, elapsed


@pytest.fixture
def hung() -> Iterator[HungResolver]:
    why = hung_resolver.problem()
    if why is not None:
        pytest.skip(why)
    resolver = HungResolver()
    yield resolver
    resolver.close()


def lease_lines(gateway: Gateway) -> list[str]:
    """The master's lines about its dead workers' leases (released, or left to lapse)."""
    return [
        line for line in gateway.log().splitlines() if "the leases of" in line or "leases of workers" in line
    ]


def test_sigterm_with_redis_paused_and_eight_workers_is_bounded(own_redis: RedisServer) -> None:
    """Redis SIGSTOPped, 8 workers, no clients: exit within 5 s, one line says the leases lapse."""
    gateway = Gateway(own_redis.url, workers=8)
    try:
        gateway.start()
        with own_redis.paused():
            code, elapsed = stop_timed(gateway)
        assert code == 0, gateway.log()[-3000:]
        assert elapsed < BOUND, f"the master took {elapsed:.1f}s:\n{gateway.log()[-3000:]}"
        lines = lease_lines(gateway)
        assert len(lines) == 1 and LAPSE_LINE in lines[0] and "8 workers" in lines[0], lines
    finally:
        gateway.close()


async def test_sigterm_with_clients_and_redis_paused_leaves_the_leases_to_lapse(
    own_redis: RedisServer,
) -> None:
    """Clients on every worker, Redis paused at the SIGTERM: the master is gone within the drain
    window plus 5 s, one line says the dead workers' leases lapse, and none counts past the lease
    time."""
    drain_window, lease_ttl = 1.0, 4.0
    gateway = Gateway(
        own_redis.url,
        workers=4,
        WEBSOCKET_DRAIN_WINDOW=str(drain_window),
        WEBSOCKET_LEASE_TTL=str(lease_ttl),
    )
    users = [f"stop-{n}-{time.time_ns()}" for n in range(12)]
    sockets: list[ClientConnection] = []
    try:
        gateway.start()
        for user in users:
            ws = await admit(gateway.ws_url, user)
            assert not isinstance(ws, int), ws
            sockets.append(ws)
        redis = own_redis.client()
        assert all(live_leases(redis, user) == 1 for user in users)
        with own_redis.paused():
            code, elapsed = await asyncio.to_thread(stop_timed, gateway)
        assert code == 0, gateway.log()[-3000:]
        lines = lease_lines(gateway)
        assert len(lines) == 1 and LAPSE_LINE in lines[0], lines
        # Released when Redis runs what the workers sent before they died, or lapsed: either way
        # no place counts after the lease time.
        await eventually(
            in_thread(lambda: all(live_leases(redis, user) == 0 for user in users)),
            timeout=lease_ttl + 5,
            what="every lease to lapse",
        )
        assert elapsed < drain_window + BOUND, f"the master took {elapsed:.1f}s:\n{gateway.log()[-3000:]}"
        redis.close()
    finally:
        for ws in sockets:
            await ws.close()
        gateway.close()


async def test_the_leases_of_killed_workers_are_released_at_once(own_redis: RedisServer) -> None:
    """Every worker SIGKILLed with clients on it: the master releases all their places in batches,
    long before they would lapse, and says how many."""
    gateway = Gateway(own_redis.url, workers=4)
    users = [f"killed-{n}-{time.time_ns()}" for n in range(12)]
    sockets: list[ClientConnection] = []
    try:
        gateway.start()
        for user in users:
            ws = await admit(gateway.ws_url, user)
            assert not isinstance(ws, int), ws
            sockets.append(ws)
        redis = own_redis.client()
        for pid in gateway.worker_pids():
            os.kill(pid, signal.SIGKILL)
        await eventually(
            in_thread(lambda: all(redis.hlen(leases_key(user)) == 0 for user in users)),
            timeout=10,
            what="every place of the killed workers released",
        )
        released = [int(line.split("released ")[1].split()[0]) for line in lease_lines(gateway)]
        assert sum(released) == len(users), lease_lines(gateway)
        redis.close()
    finally:
        for ws in sockets:
            await ws.close()
        gateway.close()


async def test_sigterm_with_a_resolver_that_never_answers_is_bounded(
    own_redis: RedisServer, hung: HungResolver
) -> None:
    """REDIS_URL names a host, and the only name server never answers: admissions are refused
    with 1013 within the connect timeout, and SIGTERM ends the master within 5 s, with one line
    saying its workers' leases (if any) lapse."""
    gateway = Gateway(f"redis://{UNRESOLVABLE}:{own_redis.port}", workers=4)
    gateway.wrap = hung.wrap
    try:
        gateway.launch()
        # Up, though never ready: no worker reaches Redis.
        await eventually(in_thread(lambda: len(gateway.worker_pids()) == 4), timeout=30, what="4 workers")
        await asyncio.to_thread(gateway.worker_states, 30)
        started = time.monotonic()
        refused = await asyncio.gather(*(admit(gateway.ws_url, f"dns-{n}") for n in range(8)))
        assert refused == [1013] * 8
        assert time.monotonic() - started < BOUND
        code, elapsed = await asyncio.to_thread(stop_timed, gateway)
        assert code == 0, gateway.log()[-3000:]
        assert elapsed < BOUND, f"the master took {elapsed:.1f}s:\n{gateway.log()[-3000:]}"
        lines = lease_lines(gateway)
        assert len(lines) == 1 and LAPSE_LINE in lines[0] and "4 workers" in lines[0], lines
    finally:
        gateway.close()


# gunicorn.conf.py as operators run it, with each new worker held a moment between its fork and
# its own signal handlers: the window in which a stop right after the start (or a reload) meets it.
_SLOW_BOOT_CONF = """
import runpy, time
globals().update(runpy.run_path({conf!r}))
_post_fork = globals().get("post_fork", lambda server, worker: None)


def post_fork(server, worker):
    _post_fork(server, worker)
    time.sleep({delay})
"""


def test_sigterm_while_workers_are_between_fork_and_their_handlers_is_bounded(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """The master's SIGTERM reaches workers that have not set their handlers yet: each still
    stops at once instead of serving on until the graceful timeout (the drain window plus 10 s)."""
    delay = 2.0
    conf = tmp_path / "slow_boot.conf.py"
    conf.write_text(_SLOW_BOOT_CONF.format(conf=str(ROOT / "gunicorn.conf.py"), delay=delay))
    gateway = Gateway(own_redis.url, workers=2)
    gateway.wrap = lambda argv: [*argv[:-1], str(conf)]
    try:
        gateway.launch()
        wait_for(lambda: gateway.log().count("Booting worker") == 2, timeout=30, what="both workers forked")
        code, elapsed = stop_timed(gateway)
        assert elapsed < delay + BOUND, f"the master took {elapsed:.1f}s:\n{gateway.log()[-3000:]}"
        assert code == 0, gateway.log()[-3000:]
        assert gateway.log().count("stopped before it started serving") == 2, gateway.log()[-3000:]
    finally:
        gateway.close()
