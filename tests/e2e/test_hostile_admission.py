"""Hostile admission: query strings, tokens at the edge of their expiry, handshake bursts and
resume loops each get their documented answer, and a bystander on the same worker keeps receiving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token

LEEWAY = 5.0


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=1, JWT_LEEWAY=str(LEEWAY)) as gw:
        yield gw


@pytest.fixture
async def bystander(gateway: Gateway) -> AsyncIterator[tuple[ClientConnection, str]]:
    user = "admission-bystander"
    async with connect(f"{gateway.ws_url}?token={make_token(user)}") as ws:
        yield ws, user


async def assert_bystander_served(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """The worker is healthy, logged no traceback, and another user's delivery is intact."""
    ws, user = bystander
    assert gateway.get("/healthz")[0] == 200
    client = redis_server.client()
    assert client.publish(f"ws:{user}", b'{"still":"here"}') == 1
    client.close()
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"still": "here"}
    assert "Traceback" not in gateway.log()


def _header(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}"}


async def _status_of(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return int(refused.value.response.status_code)


async def _close_of(url: str, **kwargs: object) -> tuple[int, str]:
    """Connect and read until the server closes: its close code and reason."""
    async with connect(url, **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


MANY_FIELDS = "&".join(f"f{i}=1" for i in range(40))


@pytest.mark.parametrize(
    "query",
    [f"since=1-ab&{MANY_FIELDS}", f"envelope=1&{MANY_FIELDS}", f"{MANY_FIELDS}&token=x"],
    ids=["since", "envelope", "token"],
)
async def test_a_query_string_with_too_many_fields_gets_400(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    query: str,
) -> None:
    """More fields than the gateway reads is a malformed query: 400, never a server error."""
    status = await _status_of(f"{gateway.ws_url}?{query}", additional_headers=_header("many-fields"))
    assert status == 400
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_a_browser_with_a_malformed_query_reads_4400(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    url = f"{gateway.ws_url}?since=1-ab&{MANY_FIELDS}"
    code = await _close_of(url, subprotocols=["bearer", make_token("browser")])
    assert code == (4400, "query_invalid")
    await assert_bystander_served(gateway, redis_server, bystander)


_TEXT = st.text(alphabet=st.sampled_from("=&;%+?#/ab019\x00\x7f\xe9\u20ac"), max_size=40)
_KEY = st.one_of(st.sampled_from(["since", "envelope", "token", "x"]), _TEXT)
_FIELD = st.builds(lambda key, sep, value: key + sep + value, _KEY, st.sampled_from(["=", ""]), _TEXT)
# Field counts around the bound as often as small ones.
_QUERY = st.integers(0, 40).flatmap(lambda n: st.lists(_FIELD, min_size=n, max_size=n)).map("&".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=_QUERY)
def test_fuzzed_query_strings_get_a_documented_answer(gateway: Gateway, query: str) -> None:
    """Any query string, with a valid token in a header (which wins over a token field): admitted,
    or refused with 400, never a server error."""

    async def run() -> int:
        url = f"{gateway.ws_url}?{_percent_safe(query)}"
        try:
            async with connect(url, additional_headers=_header("query-fuzzer"), open_timeout=10) as ws:
                await ws.send('{"type":"ping"}')
                while json.loads(await asyncio.wait_for(ws.recv(), 5)).get("type") != "pong":
                    pass
                return 101
        except InvalidStatus as refused:
            return int(refused.response.status_code)

    assert asyncio.run(run()) in {101, 400}
    assert "Traceback" not in gateway.log()


def _percent_safe(query: str) -> str:
    """The query as a client could send it: characters an HTTP request line cannot carry escaped."""
    return "".join(
        c if 0x21 <= ord(c) < 0x7F and c != "#" else "".join(f"%{b:02X}" for b in c.encode()) for c in query
    )


async def test_a_token_in_its_leeway_lives_until_the_leeway_ends(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """The leeway that admitted the token also keeps the session: it is served, and closed with
    4001 only once exp + JWT_LEEWAY has passed, not at once."""
    token = make_token("in-leeway", ttl=-2)  # exp 2 to 3 s ago: admitted within the leeway
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    async with connect(f"{gateway.ws_url}?token={token}&envelope=1") as ws:
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(LEEWAY + 10):
                while True:
                    await ws.recv()
        closed_at = time.time()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "session_expired")
    # Clocks of one machine: the close came no earlier than the end of the leeway.
    assert closed_at >= exp + LEEWAY - 0.05, closed_at - exp
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_a_token_past_its_leeway_is_refused_at_the_handshake(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    assert await _status_of(f"{gateway.ws_url}?token={make_token('past-leeway', ttl=-LEEWAY - 2)}") == 401
    await assert_bystander_served(gateway, redis_server, bystander)
