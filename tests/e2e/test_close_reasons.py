"""Every close the gateway decides carries its reason label, so equal codes can be told apart."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from harness.gateway_process import running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token


async def _refusal(url: str) -> Close:
    """Open a connection that the gateway closes at once; the close frame it sent."""
    ws = await connect(url, open_timeout=10)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd


async def test_refusals_after_the_upgrade_carry_their_reason(redis_server: RedisServer) -> None:
    """4029 says user_limit, and 1013 for a full worker says overloaded (not redis_unavailable)."""
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_MAX_CONNECTIONS_PER_USER="1",
        WEBSOCKET_MAX_CONNECTIONS_PER_WORKER="2",
    ) as gateway:
        first = await connect(f"{gateway.ws_url}?token={make_token('reasons-a')}")
        try:
            close = await _refusal(f"{gateway.ws_url}?token={make_token('reasons-a')}")
            assert (close.code, close.reason) == (4029, "user_limit")
            second = await connect(f"{gateway.ws_url}?token={make_token('reasons-b')}")
            try:
                close = await _refusal(f"{gateway.ws_url}?token={make_token('reasons-c')}")
                assert (close.code, close.reason) == (1013, "overloaded")
            finally:
                await second.close()
        finally:
            await first.close()
