"""Reopening at the limit: a client that closes, waits for the close handshake and reconnects at
once (a page reload) is never refused, over two workers."""

from __future__ import annotations

import asyncio
import collections
import uuid

from websockets.asyncio.client import ClientConnection

from harness.clients import admit
from harness.gateway_process import running_gateway
from harness.redis_server import RedisServer

CYCLES = 2000
USERS = 4


async def test_a_client_that_closes_and_reconnects_at_once_is_never_refused(
    redis_server: RedisServer,
) -> None:
    """Limit 1, renewals out of play (lease time 3,600 s): 2,000 close-then-reopen cycles, four
    users at a time over two workers. Each reopen starts once the close handshake has completed,
    which is when the client learns its socket is gone: its place must be free by then."""
    with running_gateway(
        redis_server.url, workers=2, WEBSOCKET_MAX_CONNECTIONS_PER_USER="1", WEBSOCKET_LEASE_TTL="3600"
    ) as gateway:
        outcomes: collections.Counter[object] = collections.Counter()
        workers: set[str] = set()

        async def cycles(user: str, count: int) -> None:
            ws = await admit(gateway.ws_url, user)
            for _ in range(count):
                if not isinstance(ws, ClientConnection):
                    outcomes[ws] += 1
                    ws = await admit(gateway.ws_url, user)
                    continue
                workers.add(ws.response.headers["x-gateway-worker"])
                await ws.close()  # returns once the close handshake has completed
                ws = await admit(gateway.ws_url, user)
                outcomes["admitted" if isinstance(ws, ClientConnection) else ws] += 1
            if isinstance(ws, ClientConnection):
                await ws.close()

        users = [f"reopen-{uuid.uuid4().hex[:10]}" for _ in range(USERS)]
        await asyncio.wait_for(asyncio.gather(*(cycles(u, CYCLES // USERS) for u in users)), 300)
        assert outcomes == {"admitted": CYCLES}, outcomes
        assert len(workers) == 2, "both workers served the cycles"
