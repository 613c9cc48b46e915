"""Hostile input: each abuse gets its documented answer, and a bystander keeps receiving."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode

from harness.bystander import assert_still_served, watching_bystander
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.stalled_client import StalledClient, masked_frame
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

HANDSHAKE_TIMEOUT = 2.0
FLOOD_SECONDS = 6.0


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    # Thousands of sockets on both ends: raise the soft descriptor limit the workers inherit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_HANDSHAKE_TIMEOUT=str(HANDSHAKE_TIMEOUT),
        WEBSOCKET_CLIENT_MESSAGES_PER_SECOND="10",
    ) as gw:
        yield gw
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def the_worker_survives(gateway: Gateway) -> Iterator[None]:
    """Every test here: the worker serving before the abuse is the one serving after it (none
    crashed and was replaced), and it answers. Checked per test, so in any order or alone."""
    before = gateway.worker_pids()
    assert len(before) == 1
    yield
    assert gateway.worker_pids() == before, "the worker died during the test"
    assert set(gateway.worker_states()) == set(before)


@pytest.fixture
async def bystander(
    gateway: Gateway, redis_server: RedisServer
) -> AsyncIterator[tuple[ClientConnection, str]]:
    user = "bystander"
    async with connect(f"{gateway.ws_url}?token={make_token(user)}") as ws:
        yield ws, user


async def assert_bystander_served(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """The worker is healthy and another user's delivery is intact."""
    await assert_still_served(gateway, redis_server.url, *bystander)


async def close_after(gateway: Gateway, *frames: str | bytes, text: bool | None = None) -> tuple[int, str]:
    """Send ``frames``, read until the server closes; its close code and reason."""
    ws = await connect(f"{gateway.ws_url}?token={make_token('abuser')}", max_size=None)
    with pytest.raises(ConnectionClosed) as closed:
        for frame in frames:
            await ws.send(frame, text=text)
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def rejections(gateway: Gateway, reason: str) -> float:
    for family in text_string_to_metric_families(gateway.get("/metrics")[1].decode()):
        for sample in family.samples:
            if sample.name == "websocket_rejections_total" and sample.labels == {"reason": reason}:
                return sample.value
    return 0.0


async def test_an_oversized_frame_gets_1009(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
) -> None:
    counted = rejections(gateway, "message_too_big")
    assert await close_after(gateway, "x" * 10_000) == (1009, "message_too_big")
    await eventually(
        in_thread(lambda: rejections(gateway, "message_too_big") == counted + 1),
        timeout=10,
        what="the 1009 to be counted",
    )
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_a_flood_gets_1008(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    assert await close_after(gateway, *(['{"type":"ping"}'] * 100)) == (1008, "policy_violation")
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_invalid_utf8_gets_1007(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    counted = rejections(gateway, "invalid_utf8")
    assert await close_after(gateway, b"\xff\xfe", text=True) == (1007, "invalid_utf8")
    await eventually(
        in_thread(lambda: rejections(gateway, "invalid_utf8") == counted + 1),
        timeout=10,
        what="the 1007 to be counted",
    )
    await assert_bystander_served(gateway, redis_server, bystander)
    assert "Traceback" not in gateway.log()
    assert "sent invalid UTF-8 (1007)" in gateway.log()


async def test_binary_and_unknown_frames_are_ignored(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """Binary frames, non-JSON text and unknown types are ignored; the connection stays usable."""
    async with connect(f"{gateway.ws_url}?token={make_token('odd-client')}") as ws:
        for frame in (b"\x00\x01binary", "not json", '{"type":"dance"}', "[1,2]"):
            await ws.send(frame)
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    await assert_bystander_served(gateway, redis_server, bystander)


@pytest.mark.parametrize("payload", [b"", b"x" * 125], ids=["empty", "125 bytes"])
async def test_a_ping_flood_is_cut_off_and_costs_nobody_else(
    gateway: Gateway, redis_server: RedisServer, payload: bytes
) -> None:
    """Pings as fast as a client can send them, never reading: pings spend the client's message
    budget, their pongs do not pile up, the flooder is cut off within seconds, and the worker's
    memory and another user's latency stay where they were."""
    async with watching_bystander(gateway, redis_server.url):
        url = f"{gateway.ws_url}?token={make_token('ping-flooder')}"
        flooder = await asyncio.to_thread(StalledClient, url)
        try:
            cut_off_after = await asyncio.to_thread(
                flooder.flood, masked_frame(Opcode.PING, payload), FLOOD_SECONDS
            )
        finally:
            flooder.close()
    assert cut_off_after is not None, f"still flooding after {FLOOD_SECONDS} s"


def _raw_response(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
VERSION = b"Sec-WebSocket-Version: 13\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        UPGRADE + VERSION,
        UPGRADE + b"Sec-WebSocket-Key: short\r\n" + VERSION,
        UPGRADE + KEY + b"Sec-WebSocket-Version: 8\r\n",
    ],
    ids=["no key", "short key", "old version"],
)
async def test_malformed_upgrade_headers_get_an_http_error(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    headers: bytes,
) -> None:
    token = make_token("malformed").encode()
    request = b"GET /ws?token=" + token + b" HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n"
    response = await asyncio.to_thread(_raw_response, gateway.port, request)
    assert response.split(b" ", 2)[1] == b"400", response[:200]
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_tens_of_thousands_of_query_parameters_get_414(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    query = "&".join(f"p{i}=1" for i in range(20_000)) + "&token=" + make_token("many-params")
    request = f"GET /ws?{query} HTTP/1.1\r\nHost: localhost\r\n".encode() + UPGRADE + KEY + VERSION + b"\r\n"
    response = await asyncio.to_thread(_raw_response, gateway.port, request)
    assert response.split(b" ", 2)[1] == b"414"
    await assert_bystander_served(gateway, redis_server, bystander)


async def test_two_thousand_half_open_handshakes(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """Half-sent requests cost their sockets only until the header deadline; others are served."""
    half_open = []
    for _ in range(2000):
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websock")
        half_open.append(sock)
    try:
        await assert_bystander_served(gateway, redis_server, bystander)
        async with connect(f"{gateway.ws_url}?token={make_token('newcomer')}") as ws:
            await ws.send('{"type":"ping"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}

        def all_hung_up() -> bool:
            return all(sock.recv(1) == b"" for sock in half_open)

        await eventually(
            in_thread(all_hung_up),
            timeout=HANDSHAKE_TIMEOUT + 10,
            what="the server to hang up every half-open socket",
        )
    finally:
        for sock in half_open:
            sock.close()
    await assert_bystander_served(gateway, redis_server, bystander)


def _dribble_after_a_request(port: int, seconds: float) -> float | None:
    """GET /healthz on a keep-alive connection, then a second request a byte at a time: how long
    after its first byte the server hung up, or None if it had not after ``seconds``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = b""
        while b'{"status":"ok"}' not in response:
            chunk = sock.recv(4096)
            assert chunk, response
            response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response
        dribble = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
        sock.settimeout(0.2)
        started = time.monotonic()
        for byte in dribble:
            if time.monotonic() - started > seconds:
                return None
            try:
                sock.sendall(bytes((byte,)))
                if sock.recv(1) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue  # no answer yet, and none expected: keep dribbling
            except OSError:
                return time.monotonic() - started
    raise AssertionError("ran out of bytes to dribble")


async def test_a_dribbled_second_request_on_a_keep_alive_connection_is_cut_off(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """Every request of a connection gets the header deadline, not only the first."""
    hung_up_after = await asyncio.to_thread(_dribble_after_a_request, gateway.port, HANDSHAKE_TIMEOUT + 8)
    assert hung_up_after is not None, "the dribbled request held its socket"
    assert hung_up_after < HANDSHAKE_TIMEOUT + 5
    await assert_bystander_served(gateway, redis_server, bystander)


def _one_byte_after_a_request(port: int, request: bytes, byte: bytes, seconds: float) -> float | None:
    """A whole request and its response, then one byte that begins no request: how long after it
    the server hung up, or None if it had not after ``seconds``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        response = b""
        while b'{"status":"ok"}' not in response:
            chunk = sock.recv(4096)
            assert chunk, response
            response += chunk
        sock.sendall(byte)
        started = time.monotonic()
        sock.settimeout(seconds)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            return None
        except OSError:
            closed = True
        assert closed, "the server answered a byte that begins no request"
        return time.monotonic() - started


@pytest.mark.parametrize(
    ("request_bytes", "byte"),
    [
        # A lone CRLF: the parser skips it without beginning a request.
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\r\n"),
        # One byte of a body the app answered without reading.
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n", b"a"),
    ],
    ids=["crlf", "unread-body"],
)
async def test_one_byte_after_a_keep_alive_response_does_not_hold_the_socket(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    request_bytes: bytes,
    byte: bytes,
) -> None:
    """Any byte stops uvicorn's keep-alive timer, and these begin no request: the header deadline,
    running from the response, still hangs up."""
    hung_up_after = await asyncio.to_thread(
        _one_byte_after_a_request, gateway.port, request_bytes, byte, HANDSHAKE_TIMEOUT + 6
    )
    assert hung_up_after is not None, "one byte after a response held the socket"
    await assert_bystander_served(gateway, redis_server, bystander)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=3000))
def test_fuzzed_tokens_are_refused_cleanly(gateway: Gateway, token: str) -> None:
    """Any printable token: 401 (or 431 past the header limit), never a server error."""
    head = f"GET /ws HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n".encode()
    request = head + UPGRADE + KEY + VERSION + b"\r\n"
    response = _raw_response(gateway.port, request)
    assert response.split(b" ", 2)[1] in {b"401", b"431"}, response[:200]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(st.text(max_size=6000), st.binary(max_size=6000)), min_size=1, max_size=8))
def test_fuzzed_frames_end_with_a_documented_code_or_not_at_all(
    gateway: Gateway, frames: list[str | bytes]
) -> None:
    """Any sequence of client frames leaves the connection open or closes it with 1007/1008/1009."""

    async def run() -> int | None:
        async with connect(f"{gateway.ws_url}?token={make_token('fuzzer')}", max_size=None) as ws:
            try:
                for frame in frames:
                    await ws.send(frame)
                await ws.send('{"type":"ping"}')
                while json.loads(await asyncio.wait_for(ws.recv(), 5)) != {"type": "pong"}:
                    pass
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    assert asyncio.run(run()) in {None, 1007, 1008, 1009}
    assert gateway.get("/healthz")[0] == 200
