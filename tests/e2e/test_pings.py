"""Protocol pings from the worker's ping wheel, against a real gateway: sockets opened at scattered
times fall in different ticks, and each still gets its pings an interval apart, and each peer
that never answers is closed with 1011 ping_timeout once its timeout has passed, not before,
while a bystander on the same worker gets every message."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from harness.bystander import watching_bystander
from harness.gateway_process import running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.stalled_client import StalledClient
from harness.tokens import make_token

_PEERS = 10
_PINGS = 4  # each answering client is watched for this many pings
# How late a loaded 2-core machine may run the worker's timer or the client's reads.
_LAG = 1.0


class _Answering:
    """A client that answers every ping (websockets queues the pong) and notes when each came."""

    def __init__(self, url: str) -> None:
        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri)  # type: ignore[arg-type]
        self.pings: list[float] = []
        self.close: Close | None = None
        self.ended = asyncio.Event()
        self.enough = asyncio.Event()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.uri.host, self.uri.port)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while not any(isinstance(event, Response) for event in await self._events()):
            pass
        self.task = asyncio.create_task(self._read())

    def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def _events(self) -> list[object]:
        data = await self.reader.read(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    async def _read(self) -> None:
        try:
            while self.protocol.state.name != "CLOSED":
                for event in await self._events():
                    if isinstance(event, Frame) and event.opcode is Opcode.PING:
                        self.pings.append(time.monotonic())
                        if len(self.pings) >= _PINGS:
                            self.enough.set()
                    elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        self.close = Close.parse(event.data)
                self._flush()  # the pongs
        finally:
            self.ended.set()

    async def aclose(self) -> None:
        self.task.cancel()
        self.writer.close()


def _deaf(url: str) -> tuple[Close | None, float]:
    """A peer that reads every ping and answers none: its close, and how long after its handshake."""
    client = StalledClient(url)
    opened = time.monotonic()
    try:
        return client.close_frame(), time.monotonic() - opened
    finally:
        client.close()


# The wheel visits a socket at its ping, then at the sooner of its pong's deadline and its next
# ping: both orders.
@pytest.mark.parametrize(("interval", "timeout"), [(0.3, 0.5), (0.5, 0.3)])
async def test_pings_keep_their_interval_and_each_deaf_peer_gets_its_full_timeout(
    redis_server: RedisServer, interval: float, timeout: float
) -> None:
    tick = min(interval, timeout) / 10
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_PING_INTERVAL=str(interval),
        WEBSOCKET_PING_TIMEOUT=str(timeout),
    ) as gateway:
        async with watching_bystander(gateway, redis_server.url):
            scatter = random.Random(6455)
            answering: list[_Answering] = []
            deaf: list[asyncio.Task[tuple[Close | None, float]]] = []
            try:
                for index in range(_PEERS):
                    client = _Answering(f"{gateway.ws_url}?token={make_token(f'pings-answering-{index}')}")
                    await client.open()
                    answering.append(client)
                    url = f"{gateway.ws_url}?token={make_token(f'pings-deaf-{index}')}"
                    deaf.append(asyncio.create_task(asyncio.to_thread(_deaf, url)))
                    # Spread the sockets over the ticks of the wheel (this is not a wait for anything).
                    await asyncio.sleep(scatter.uniform(0, 3 * tick))
                closes = await asyncio.gather(*deaf)
                watched = [asyncio.create_task(client.enough.wait()) for client in answering]
                ended = [asyncio.create_task(client.ended.wait()) for client in answering]
                done, _ = await asyncio.wait(watched, timeout=_PINGS * interval + _LAG + 5)
                still_open = [not client.ended.is_set() for client in answering]
                for task in [*watched, *ended]:
                    task.cancel()
            finally:
                for client in answering:
                    await client.aclose()
        assert value(scrape(gateway), "websocket_rejections_total", reason="ping_timeout") == _PEERS

    for close, elapsed in closes:
        assert close is not None and (close.code, close.reason) == (1011, "ping_timeout")
        # Never before its timeout; within a tick or two (and a loaded machine's lag) after.
        assert interval + timeout - 0.05 <= elapsed <= interval + timeout + 2 * tick + _LAG
    assert len(done) == _PEERS and all(still_open)
    for client in answering:
        assert client.close is None
        gaps = [later - earlier for earlier, later in itertools.pairwise(client.pings)]
        # An interval apart, rounded up to the tick: never sooner (the clients' reads jitter a little).
        assert all(interval - 0.03 <= gap <= interval + tick + _LAG for gap in gaps)
