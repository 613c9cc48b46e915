"""Every close the gateway decides carries its reason label, so equal codes can be told apart."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode

from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.stalled_client import StalledClient
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


def test_a_peer_that_never_answers_pings_reads_ping_timeout(redis_server: RedisServer) -> None:
    """A client that reads but never sends (so never pongs) gets 1011 ping_timeout, counted;
    not uvicorn's own wording."""
    with running_gateway(
        redis_server.url, workers=1, WEBSOCKET_PING_INTERVAL="1", WEBSOCKET_PING_TIMEOUT="1"
    ) as gateway:
        client = StalledClient(f"{gateway.ws_url}?token={make_token('reasons-deaf')}")
        try:
            close = client.close_frame()  # reads the pings, answers none
        finally:
            client.close()
        assert close is not None and (close.code, close.reason) == (1011, "ping_timeout")
        assert value(scrape(gateway), "websocket_rejections_total", reason="ping_timeout") == 1


def test_a_frame_that_breaks_the_protocol_reads_protocol_error(gateway_one: Gateway) -> None:
    """An unmasked client frame (RFC 6455 5.1) is closed with 1002 protocol_error, not with
    websockets' own wording."""
    client = StalledClient(f"{gateway_one.ws_url}?token={make_token('reasons-unmasked')}")
    try:
        client.sock.sendall(Frame(Opcode.TEXT, b"{}").serialize(mask=False))
        close = client.close_frame()
    finally:
        client.close()
    assert close is not None and (close.code, close.reason) == (1002, "protocol_error")
