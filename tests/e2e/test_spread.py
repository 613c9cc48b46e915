"""Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads a burst of connects
over the workers instead of letting the quickest one take most of a shared accept queue."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

WORKERS = 3


@pytest.fixture(scope="module")
def gateway_three(redis_server: RedisServer) -> Iterator[Gateway]:
    # Every client here comes from 127.0.0.1: lift the per-address share of handshakes (100), which
    # a burst of 300 from one address would meet; the spread, not that share, is under test.
    with running_gateway(
        redis_server.url,
        workers=WORKERS,
        WEBSOCKET_DRAIN_WINDOW="30",
        WEBSOCKET_MAX_PENDING_HANDSHAKES_PER_ADDRESS="1000",
    ) as gateway:
        yield gateway


def worker_pid(ws: ClientConnection) -> int:
    return int(ws.response.headers["x-gateway-worker"].rsplit("-", 1)[1])


async def burst(gateway: Gateway, size: int) -> Counter[int]:
    """``size`` clients connect at once; how many landed on each worker, by pid."""
    run = uuid.uuid4().hex[:8]
    sockets = await asyncio.gather(
        *(
            connect(f"{gateway.ws_url}?token={make_token(f'spread-{run}-{i}')}", open_timeout=30)
            for i in range(size)
        )
    )
    try:
        return Counter(worker_pid(ws) for ws in sockets)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def test_a_burst_of_300_lands_within_40_percent_of_the_fair_share(gateway_three: Gateway) -> None:
    """300 connects at once over 3 workers: each worker takes 60 to 140 (binomial, 100 +- 8.2:
    outside fails about once in 400,000 runs; one accept queue for all gives one worker most)."""
    pids = set(gateway_three.worker_pids())
    shares = await burst(gateway_three, 300)
    assert set(shares) <= pids
    fair = 300 / WORKERS
    assert all(0.6 * fair <= shares[pid] <= 1.4 * fair for pid in pids), shares


async def test_a_burst_of_60_reaches_every_worker(gateway_three: Gateway) -> None:
    """60 connects at once: every worker takes a share, none more than about half.

    The kernel picks a listener by a hash of each connection's addresses and ports, so a worker's
    share is binomial (20 +- 3.7 here): bounds of 3 and 40 fail less than once in a million runs.
    """
    pids = set(gateway_three.worker_pids())
    shares = await burst(gateway_three, 60)
    assert all(3 <= shares[pid] <= 40 for pid in pids), shares


async def test_a_draining_worker_takes_no_new_connection(gateway_three: Gateway) -> None:
    """SIGTERM to one worker holding a socket: while it drains, every new connect lands elsewhere."""
    held: list[ClientConnection] = []
    draining: int | None = None
    for _ in range(30):
        ws = await admit(gateway_three.ws_url, f"held-{uuid.uuid4().hex[:10]}")
        assert isinstance(ws, ClientConnection), ws
        held.append(ws)
        # Two sockets on one worker: the drain closes the second only after half its 30 s window.
        if Counter(worker_pid(w) for w in held)[worker_pid(ws)] == 2:
            draining = worker_pid(ws)
            break
    assert draining is not None
    os.kill(draining, signal.SIGTERM)
    await eventually(
        in_thread(lambda: "drain began" in gateway_three.log()), timeout=10, what="the drain to begin"
    )

    shares = await burst(gateway_three, 60)
    assert draining not in shares, shares
    assert sum(shares.values()) == 60
    assert any(ws.close_code is None for ws in held if worker_pid(ws) == draining)
    await asyncio.gather(*(ws.close() for ws in held))
    await asyncio.to_thread(gateway_three.wait_all_workers_ready)
