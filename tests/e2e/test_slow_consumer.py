"""One client that stops reading costs nobody else anything, and is closed with 4008."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.servers import Gateway, RedisServer, make_token, running_gateway

READERS = 50
MESSAGES = 10_000


class StalledClient:
    """A real WebSocket client that completes the handshake, then never reads again."""

    def __init__(self, url: str) -> None:
        self.protocol = ClientProtocol(parse_uri(url))
        self.sock = socket.socket()
        # A tiny receive window, so the server's buffers fill quickly.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        uri = parse_uri(url)
        self.sock.connect((uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        self.sock.settimeout(10)
        while not any(isinstance(e, Response) for e in self._read_some()):
            pass

    def _read_some(self) -> list[object]:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    def close_code(self) -> int | None:
        """Read everything the server sent; the code of its close frame, if one came."""
        while True:
            for event in self._read_some():
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    return Close.parse(event.data).code
            if self.protocol.state.name == "CLOSED":
                return None

    def close(self) -> None:
        self.sock.close()


def worker_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1) as gw:
        yield gw


async def _run(
    gateway: Gateway, redis_url: str, readers: list[tuple[str, ClientConnection]], heavy: str
) -> list[float]:
    """Publish MESSAGES over the readers, and 16 MiB in 4 KiB frames to ``heavy``; reader latencies."""
    latencies: list[float] = []

    async def read(ws: ClientConnection, count: int) -> None:
        for _ in range(count):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            latencies.append((time.time() - frame["t"]) * 1000)

    per_reader = MESSAGES // len(readers)
    reading = [asyncio.create_task(read(ws, per_reader)) for _, ws in readers]
    publisher = aioredis.Redis.from_url(redis_url)
    padding = "x" * 4096
    for _ in range(per_reader):
        async with publisher.pipeline(transaction=False) as pipe:
            for user, _ws in readers:
                pipe.publish(f"ws:{user}", json.dumps({"t": time.time()}))
            # More than the kernel's socket buffers hold, so a stalled client's queue must overflow.
            for _ in range(20):
                pipe.publish(f"ws:{heavy}", json.dumps({"t": time.time(), "pad": padding}))
            await pipe.execute()
    await asyncio.gather(*reading)
    await publisher.aclose()
    return latencies


async def _baseline(
    gateway: Gateway, redis_url: str, readers: list[tuple[str, ClientConnection]], heavy: str
) -> list[float]:
    fast = await connect(f"{gateway.ws_url}?token={make_token(heavy)}", max_size=None)
    drained = asyncio.create_task(_discard(fast))
    latencies = await _run(gateway, redis_url, readers, heavy)
    await fast.close()
    await drained
    return latencies


async def _discard(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def test_a_stalled_client_is_closed_with_4008_and_others_keep_their_latency(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    readers = [
        (f"reader-{i}", await connect(f"{gateway.ws_url}?token={make_token(f'reader-{i}')}"))
        for i in range(READERS)
    ]
    (worker,) = gateway.worker_pids()

    # Baselines before and after: the same traffic, the heavy user's client reading everything.
    # Bracketing the stalled run keeps a load change on the shared machine from looking like harm.
    first_baseline = await _baseline(gateway, redis_server.url, readers, "fast-1")
    rss_before = worker_rss_kib(worker)
    stalled = StalledClient(f"{gateway.ws_url}?token={make_token('stalled')}")
    with_stalled = await _run(gateway, redis_server.url, readers, heavy="stalled")
    rss_after = worker_rss_kib(worker)
    second_baseline = await _baseline(gateway, redis_server.url, readers, "fast-2")
    baseline = max(first_baseline, second_baseline, key=p99)

    assert len(first_baseline) == len(second_baseline) == len(with_stalled) == MESSAGES
    # Every reader got every message; the stalled client cost them at most a doubling of p99
    # (plus 5 ms of scheduling noise on a shared 2-core machine).
    assert p99(with_stalled) <= 2 * p99(baseline) + 5, (p99(baseline), p99(with_stalled))
    assert await asyncio.to_thread(stalled.close_code) == 4008
    stalled.close()
    # The stalled socket's backlog is bounded by its queue (256 frames): no growth with the traffic.
    assert rss_after - rss_before < 32 * 1024, (rss_before, rss_after)
    assert all(ws.close_code is None for _, ws in readers)
    await asyncio.gather(*(ws.close() for _, ws in readers))
