"""A token carried in the ``bearer`` subprotocol is refused after the upgrade, with a close code
and reason a browser can read (4401, 4001, 4403), at no cost: no Redis command, no lease, no
subscription, no place in the hub, and a socket that is gone within the close deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close

from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer, command_calls
from harness.stalled_client import StalledClient, server_held_ports
from harness.tokens import SECRET, make_token
from harness.waiting import wait_for

ALLOWED_ORIGIN = "https://app.example"
# The server resets a socket whose peer does not answer its close frame after 3 s.
_CLOSE_DEADLINE = 3.0


@pytest.fixture(scope="module")
def quiet_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(quiet_redis: RedisServer) -> Iterator[Gateway]:
    # A long probe interval keeps the gateway's own traffic out of the command counts.
    with running_gateway(
        quiet_redis.url, workers=1, REDIS_PROBE_INTERVAL="300", CORS_ORIGINS=f'["{ALLOWED_ORIGIN}"]'
    ) as gw:
        yield gw


def _offers(case: str) -> list[str]:
    """The subprotocols a browser would offer in each case."""
    exp = int(time.time()) + 3600
    tokens = {
        "missing": None,
        "garbage": "not.a.jwt",
        "bad signature": jwt.encode({"sub": "u", "exp": exp}, SECRET + "x", algorithm="HS256"),
        "no exp": jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"),
        "expired": make_token("u", ttl=-60),
        "valid": make_token("u"),
    }
    token = tokens[case]
    return ["bearer"] if token is None else ["bearer", token]


async def _close_after_upgrade(url: str, subprotocols: list[str], origin: str = ALLOWED_ORIGIN) -> Close:
    """Open with ``subprotocols``; the handshake must succeed (selecting ``bearer``) and the
    close frame that follows at once is returned."""
    ws = await connect(url, subprotocols=subprotocols, origin=origin, open_timeout=10)  # type: ignore[arg-type]
    assert ws.subprotocol == "bearer"
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("missing", 4401, "token_missing"),
        ("garbage", 4401, "token_invalid"),
        ("bad signature", 4401, "token_invalid"),
        ("no exp", 4401, "token_invalid"),
        ("expired", 4001, "token_expired"),
    ],
)
async def test_a_bad_bearer_token_is_a_close_code_after_the_upgrade(
    gateway: Gateway, quiet_redis: RedisServer, case: str, code: int, reason: str
) -> None:
    """Each token fault is the table's close code and reason label, counted, with no Redis work."""
    client = quiet_redis.client()
    before, counted = (
        command_calls(client),
        value(scrape(gateway), "websocket_rejections_total", reason=reason),
    )
    close = await _close_after_upgrade(gateway.ws_url, _offers(case))
    assert (close.code, close.reason) == (code, reason)
    assert command_calls(client) == before
    assert value(scrape(gateway), "websocket_rejections_total", reason=reason) == counted + 1
    client.close()


async def test_a_forbidden_origin_with_a_bearer_token_is_4403(
    gateway: Gateway, quiet_redis: RedisServer
) -> None:
    """A valid token from an Origin outside CORS_ORIGINS: 4403 origin_forbidden, no Redis work."""
    client = quiet_redis.client()
    before = command_calls(client)
    close = await _close_after_upgrade(gateway.ws_url, _offers("valid"), origin="https://evil.example")
    assert (close.code, close.reason) == (4403, "origin_forbidden")
    assert command_calls(client) == before
    client.close()


async def test_query_and_header_carriers_keep_their_http_statuses(gateway: Gateway) -> None:
    """Without the bearer subprotocol, the same faults are still refused before the upgrade."""
    expired = make_token("u", ttl=-60)
    for kwargs, status in [
        ({"uri": f"{gateway.ws_url}?token=not.a.jwt"}, 401),
        ({"uri": gateway.ws_url, "additional_headers": {"Authorization": f"Bearer {expired}"}}, 401),
        ({"uri": f"{gateway.ws_url}?token={make_token('u')}", "origin": "https://evil.example"}, 403),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(**kwargs):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == status, kwargs


def test_a_flood_of_bad_bearer_handshakes_holds_nothing(gateway: Gateway, quiet_redis: RedisServer) -> None:
    """200 bearer handshakes with bad tokens from clients that never answer the close frame: each
    gets 4401, none costs a Redis command, a lease, a subscription or a hub place, and every
    server socket is gone within the close deadline."""
    client = quiet_redis.client()
    before = command_calls(client)
    counted = value(scrape(gateway), "websocket_rejections_total", reason="token_invalid")
    clients: list[StalledClient] = []
    closes: list[Close | None] = []
    try:
        for i in range(200):
            clients.append(StalledClient(gateway.ws_url, subprotocols=["bearer", f"bad.token.{i}"]))
            closes.append(clients[-1].close_frame())  # read, never answered
        state = gateway.worker_states()
        assert [(s["connections"], s["leases"], s["subscriptions"]) for s in state.values()] == [(0, 0, 0)]
        ports = {c.port for c in clients}
        wait_for(
            lambda: not ports & server_held_ports(gateway.port),
            timeout=_CLOSE_DEADLINE + 2,
            what="the server to drop every refused socket",
        )
        assert {(c.code, c.reason) for c in closes if c is not None} == {(4401, "token_invalid")}
        assert None not in closes
        assert value(scrape(gateway), "websocket_rejections_total", reason="token_invalid") == counted + 200
        assert command_calls(client) == before
        assert client.keys("*ws:conns*") == []
    finally:
        for c in clients:
            c.close()
        client.close()
