"""In-band refresh: a success is acknowledged in envelope mode with the session's new expiry;
a failure closes with the table's code and a reason label that says why."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.gateway_process import Gateway
from harness.metrics import scrape, value
from harness.tokens import make_token


async def test_a_refresh_is_acknowledged_with_the_new_expiry(gateway_one: Gateway, user: str) -> None:
    """envelope=1: ``{"type":"refreshed","exp":N}`` with N the new token's exp, and the session
    outlives its first token."""
    async with connect(
        f"{gateway_one.ws_url}?envelope=1", subprotocols=["bearer", make_token(user, ttl=2)]
    ) as ws:  # type: ignore[list-item]
        exp = int(time.time()) + 600
        await ws.send(json.dumps({"type": "refresh", "token": make_token(user, ttl=600)}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack == {"type": "refreshed", "exp": ack["exp"]} and exp <= ack["exp"] <= exp + 1
        await asyncio.sleep(2.5)  # past the first token's exp: the behaviour under test
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_an_older_token_keeps_the_later_expiry(gateway_one: Gateway, user: str) -> None:
    """A refresh never shortens the session: the ack names the later of the two exps."""
    first = make_token(user, ttl=900)
    async with connect(f"{gateway_one.ws_url}?token={first}&envelope=1") as ws:
        await ws.send(json.dumps({"type": "refresh", "token": make_token(user, ttl=60)}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert ack["type"] == "refreshed" and ack["exp"] >= int(time.time()) + 890


async def test_raw_mode_gets_no_acknowledgement(gateway_one: Gateway, user: str) -> None:
    """Without envelope=1 every frame is a published payload byte for byte, so no ack is sent:
    the next frame after a refresh and a ping is the pong."""
    async with connect(f"{gateway_one.ws_url}?token={make_token(user)}") as ws:
        await ws.send(json.dumps({"type": "refresh", "token": make_token(user, ttl=600)}))
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


@pytest.mark.parametrize(
    ("refresh", "code", "reason"),
    [
        ({"type": "refresh"}, 4401, "token_missing"),
        ({"type": "refresh", "token": ""}, 4401, "token_missing"),
        ({"type": "refresh", "token": 42}, 4401, "token_invalid"),
        ({"type": "refresh", "token": "not.a.jwt"}, 4401, "token_invalid"),
        ({"type": "refresh", "token": make_token("u", secret="another-secret-" * 4)}, 4401, "token_invalid"),
        ({"type": "refresh", "token": make_token("u", ttl=-60)}, 4001, "token_expired"),
        ({"type": "refresh", "token": make_token("someone-else")}, 4401, "token_wrong_user"),
    ],
)
async def test_a_failed_refresh_closes_with_why(
    gateway_one: Gateway, refresh: dict[str, object], code: int, reason: str
) -> None:
    """Each failure is the table's code, its reason label as the close reason, and counted."""
    counted = value(scrape(gateway_one), "websocket_rejections_total", reason=reason)
    async with connect(f"{gateway_one.ws_url}?token={make_token('u')}&envelope=1") as ws:
        await ws.send(json.dumps(refresh))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)
    assert value(scrape(gateway_one), "websocket_rejections_total", reason=reason) == counted + 1
