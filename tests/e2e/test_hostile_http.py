"""Hostile input at the protocol layer (HTTP heads, pipelining, WebSocket frames around a close):
each gets its documented answer, and a bystander on the same worker keeps receiving every
message on time while the worker's memory stays within a stated bound."""

from __future__ import annotations

import asyncio
import json
import resource
import select
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode

from gateway.telemetry import throttled_log
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.stalled_client import StalledClient, masked_frame, worker_rss_kib
from harness.tokens import make_token
from harness.waiting import eventually, in_thread, wait_for

T = TypeVar("T")

HANDSHAKE_TIMEOUT = 8.0  # long enough that only the head limits can end the floods below
ATTACK_SECONDS = 6.0
# The worker may grow this much under any one attack (its baseline is some 50 MiB).
RSS_BOUND_KIB = 48 * 1024

UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(
        redis_server.url,
        workers=1,
        WEBSOCKET_HANDSHAKE_TIMEOUT=str(HANDSHAKE_TIMEOUT),
        WEBSOCKET_CLIENT_MESSAGES_PER_SECOND="10",
    ) as gw:
        yield gw


@pytest.fixture
async def bystander(gateway: Gateway) -> AsyncIterator[tuple[ClientConnection, str]]:
    user = "http-bystander"
    async with connect(f"{gateway.ws_url}?token={make_token(user)}") as ws:
        yield ws, user


async def _round_trips(
    publisher: aioredis.Redis, bystander: tuple[ClientConnection, str], seconds: float
) -> list[float]:
    """Publish-to-receive times of the bystander's messages, one after another: every one must
    arrive, in order."""
    ws, user = bystander
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = time.monotonic()
        marker = f"{sent:.6f}"
        assert await publisher.publish(f"ws:{user}", json.dumps({"probe": marker})) == 1
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"probe": marker}
        times.append(time.monotonic() - sent)
        await asyncio.sleep(0.005)
    return times


async def unnoticed(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    attack: Callable[[], T],
) -> T:
    """Run the blocking ``attack`` in a thread while the bystander is measured: every message
    arrives, the median round trip at most doubles (plus 5 ms of noise on a shared machine), none
    takes over a second (no event-loop stall), and the worker grows by under RSS_BOUND_KIB."""
    (worker,) = gateway.worker_pids()
    publisher = aioredis.Redis.from_url(redis_server.url)
    try:
        before = await _round_trips(publisher, bystander, 1.0)
        rss_before = worker_rss_kib(worker)
        running = asyncio.create_task(asyncio.to_thread(attack))
        during: list[float] = []
        rss_peak = rss_before
        while not running.done():
            during += await _round_trips(publisher, bystander, 0.2)
            rss_peak = max(rss_peak, worker_rss_kib(worker))
        result = await running
        during += await _round_trips(publisher, bystander, 0.2)
    finally:
        await publisher.aclose()
    assert rss_peak - rss_before < RSS_BOUND_KIB, (rss_before, rss_peak)
    assert statistics.median(during) <= 2 * statistics.median(before) + 0.005, (
        statistics.median(before),
        statistics.median(during),
    )
    assert max(during) < 1.0, max(during)
    assert gateway.worker_pids() == [worker]
    return result


def _stream(port: int, head: bytes, filler: bytes, seconds: float = ATTACK_SECONDS) -> bytes:
    """Send ``head``, then ``filler`` over and over without ever ending the head, until the
    server answers or hangs up or ``seconds`` pass; what the server sent (b"" for nothing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        chunk = memoryview(filler * max(1, 65536 // len(filler)))
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            readable, writable, _ = select.select([sock], [sock], [], 0.2)
            if readable:
                break
            if writable:
                try:
                    sent = (sent + sock.send(chunk[sent:])) % len(chunk)
                except OSError:
                    break
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(5)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def _status(response: bytes) -> bytes:
    return response.split(b" ", 2)[1] if response.startswith(b"HTTP/1.1 ") else response[:80]


def _ws_head(user: str) -> bytes:
    return b"GET /ws?token=" + make_token(user).encode() + b" HTTP/1.1\r\nHost: localhost\r\n" + UPGRADE + KEY


@pytest.mark.parametrize("path", [b"/healthz", b"/ws"])
async def test_an_endless_url_gets_414(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str], path: bytes
) -> None:
    """A request target that never ends is refused once it passes the limit, not buffered (and
    copied again with every read) until the header deadline."""
    response = await unnoticed(
        gateway, redis_server, bystander, lambda: _stream(gateway.port, b"GET " + path + b"?a=", b"a" * 4096)
    )
    assert _status(response) == b"414", response[:200]


@pytest.mark.parametrize(
    ("head", "filler"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n", b"X-a: b\r\n"),
        (_ws_head("header-flooder"), b"X-a: b\r\n"),
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ", b"b" * 4096),
        (_ws_head("header-flooder") + b"X-Big: ", b"b" * 4096),
    ],
    ids=[
        "many headers",
        "many headers on an upgrade",
        "one endless header",
        "one endless header on an upgrade",
    ],
)
async def test_an_endless_head_gets_431(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    head: bytes,
    filler: bytes,
) -> None:
    response = await unnoticed(gateway, redis_server, bystander, lambda: _stream(gateway.port, head, filler))
    assert _status(response) == b"431", response[:200]


def _flood(port: int, head: bytes, filler: bytes, seconds: float = ATTACK_SECONDS) -> tuple[bytes, bool]:
    """Send ``head``, then ``filler`` over and over whatever the server answers, until it hangs
    up or ``seconds`` pass: what it sent, and whether it hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        chunk = filler * max(1, 65536 // len(filler))
        answer = b""
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            readable, writable, _ = select.select([sock], [sock], [], 0.2)
            try:
                if readable:
                    if not (data := sock.recv(65536)):
                        return answer, True
                    answer += data
                if writable:
                    sock.send(chunk)
            except OSError:
                return answer, True
        return answer, False


@pytest.mark.parametrize(
    "method_and_path", [b"GET /healthz", b"POST /healthz"], ids=["answered", "refused by the app"]
)
async def test_an_endless_trailer_section_is_cut_off(
    gateway: Gateway,
    redis_server: RedisServer,
    bystander: tuple[ClientConnection, str],
    method_and_path: bytes,
) -> None:
    """A chunked body's trailer section is a head of its own (RFC 9112 7.1.2): the parser grows
    a trailer field by concatenation, so one that never ends cost its square in copies and
    stalled the worker for many seconds. It meets the head's limit and the connection is closed."""
    head = method_and_path + b" HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-a: "
    answer, hung_up = await unnoticed(
        gateway, redis_server, bystander, lambda: _flood(gateway.port, head, b"a" * 4096)
    )
    assert hung_up, answer[:200]


def test_a_chunked_body_with_trailers_within_the_limits_is_served(gateway: Gateway) -> None:
    chunks = b"1\r\na\r\n" * 20_000 + b"0\r\n" + b"X-a: b\r\n" * 90 + b"X-Big: " + b"b" * 7_000 + b"\r\n\r\n"
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    then = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    response = _request(gateway.port, head + chunks + then)
    assert response.count(b"HTTP/1.1 200 OK") == 2, response[:400]


def _request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return _read_all(sock)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-a: b\r\n" * 98,
        b"GET /healthz?" + b"a" * 7991 + b" HTTP/1.1\r\nHost: localhost\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 7990 + b"\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + (b"X-Big: " + b"b" * 7000 + b"\r\n") * 8,
    ],
    ids=["100 headers", "an 8,000-byte target", "an 8,000-byte header", "a 56 KB head"],
)
def test_a_head_at_the_limits_is_served(gateway: Gateway, head: bytes) -> None:
    response = _request(gateway.port, head + b"Connection: close\r\n\r\n")
    assert _status(response) == b"200", response[:200]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-a: b\r\n" * 101, b"431"),
        (b"GET /healthz?" + b"a" * 7992 + b" HTTP/1.1\r\nHost: localhost\r\n", b"414"),
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 7996 + b"\r\n", b"431"),
        (b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + (b"X-Big: " + b"b" * 7000 + b"\r\n") * 12, b"431"),
    ],
    ids=["101 headers", "an 8,001-byte target", "an 8,001-byte header", "an 84 KB head"],
)
def test_a_head_past_the_limits_is_refused(gateway: Gateway, head: bytes, status: bytes) -> None:
    response = _request(gateway.port, head + b"\r\n")
    assert _status(response) == status, response[:200]
    assert b"connection: close" in response.lower()


def _pipeline(port: int, total: int, seconds: float = ATTACK_SECONDS) -> int:
    """Pipelined GETs, ``total`` bytes of them, never reading an answer; how many were sent
    before the server stopped taking them (it hangs up or stops reading)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    chunk = request * (65536 // len(request))
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(0.5)
        started = time.monotonic()
        while sent < total and time.monotonic() - started < seconds:
            try:
                sent += sock.send(chunk)
            except TimeoutError:
                continue
            except OSError:
                break
    return sent


async def test_pipelined_requests_never_read_cost_bounded_memory(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """Megabytes of tiny pipelined requests whose answers are never read, on several connections:
    what one connection may have queued is bounded, and the memory is back after they close."""
    (worker,) = gateway.worker_pids()
    rss_before = worker_rss_kib(worker)

    def attack() -> list[int]:
        return [_pipeline(gateway.port, 10 * 1024 * 1024) for _ in range(4)]

    await unnoticed(gateway, redis_server, bystander, attack)
    await eventually(
        in_thread(lambda: worker_rss_kib(worker) - rss_before < 16 * 1024),
        timeout=10,
        what="the worker's memory to come back",
    )


def test_a_pipeline_within_the_bound_is_answered_in_order(gateway: Gateway) -> None:
    requests = b"".join(b"GET /healthz?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(16))
    response = _request(
        gateway.port, requests + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert response.count(b"HTTP/1.1 200 OK") == 17, response[:400]


def test_a_pipeline_past_the_bound_is_answered_up_to_it_then_closed(gateway: Gateway) -> None:
    requests = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 100
    response = _request(gateway.port, requests)
    answers = response.count(b"HTTP/1.1 200 OK")
    assert 1 <= answers <= 17, answers
    assert response.lower().count(b"connection: close") == 1, response[-300:]


def rejections(gateway: Gateway, reason: str) -> float:
    for family in text_string_to_metric_families(gateway.get("/metrics")[1].decode()):
        for sample in family.samples:
            if sample.name == "websocket_rejections_total" and sample.labels == {"reason": reason}:
                return sample.value
    return 0.0


async def test_frames_after_a_refusal_are_not_read(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """A browser-style refusal (upgraded, then closed with 4401) whose client keeps sending:
    the closing socket reads no more than a close handshake needs and is cut at once."""
    flooder = await asyncio.to_thread(StalledClient, gateway.ws_url, ["bearer", "not.a.token"])
    try:
        cut_off_after = await unnoticed(
            gateway,
            redis_server,
            bystander,
            lambda: flooder.flood(masked_frame(Opcode.TEXT, b"x"), ATTACK_SECONDS),
        )
    finally:
        flooder.close()
    assert cut_off_after is not None, f"still reading after {ATTACK_SECONDS} s"
    assert cut_off_after < 1.5, cut_off_after


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one byte"])
async def test_a_flood_of_continuation_frames_gets_1008(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str], payload: bytes
) -> None:
    """A text frame without FIN, then continuations for ever: every frame spends the client's
    budget, as pings do, and the flooder is cut off with 1008."""
    counted = rejections(gateway, "policy_violation")
    url = f"{gateway.ws_url}?token={make_token('fragment-flooder')}"
    flooder = await asyncio.to_thread(StalledClient, url)
    try:
        flooder.sock.sendall(Frame(Opcode.TEXT, b"x", fin=False).serialize(mask=True))
        continuation = Frame(Opcode.CONT, payload, fin=False).serialize(mask=True)
        cut_off_after = await unnoticed(
            gateway, redis_server, bystander, lambda: flooder.flood(continuation, ATTACK_SECONDS)
        )
    finally:
        flooder.close()
    assert cut_off_after is not None, f"still flooding after {ATTACK_SECONDS} s"
    await eventually(
        in_thread(lambda: rejections(gateway, "policy_violation") > counted),
        timeout=10,
        what="the 1008 to be counted",
    )


async def test_a_fragmented_message_within_the_budget_is_served(gateway: Gateway) -> None:
    async with connect(f"{gateway.ws_url}?token={make_token('fragmenter')}") as ws:
        await ws.send(iter(['{"type":', '"ping"}']))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /ws?token=%s HTTP/1.0\r\nHost: localhost\r\n" + UPGRADE + KEY,
        b"GET /ws?token=%s HTTP/1.1\r\n" + UPGRADE + KEY,
    ],
    ids=["HTTP/1.0", "no Host"],
)
def test_an_upgrade_that_breaks_rfc_6455_gets_400(gateway: Gateway, request_head: bytes) -> None:
    request = request_head.replace(b"%s", make_token("old-client").encode()) + b"\r\n"
    response = _request(gateway.port, request)
    assert _status(response) == b"400", response[:200]


@pytest.fixture(scope="module")
def few_descriptors(redis_server: RedisServer) -> Iterator[Gateway]:
    """A worker with a soft descriptor limit of 256."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        gateway = running_gateway(redis_server.url, workers=1)
        gw = gateway.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield gw
    finally:
        gateway.__exit__(None, None, None)


def test_at_the_descriptor_limit_new_connections_get_503_and_one_log_line(few_descriptors: Gateway) -> None:
    """Past its descriptor reserve a worker answers 503 (the load balancer tries another) rather
    than accept and drop the socket unanswered, and says so in its log, once in a while."""
    held: list[socket.socket] = []
    statuses = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", few_descriptors.port), timeout=5)
            held.append(sock)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            statuses.append(_status(answer))
    finally:
        for sock in held:
            sock.close()
    assert set(statuses) == {b"200", b"503"}, statuses
    assert statuses.index(b"503") > 100
    log = few_descriptors.log()
    # Rate-limited: a burst of lines, then one per interval, however many were refused.
    assert 1 <= log.count("descriptor") <= throttled_log.BURST + 1, log[-2000:]
    # Once the held sockets are gone, the worker serves again.
    wait_for(lambda: few_descriptors.get("/healthz")[0] == 200, timeout=10, what="the worker to serve again")
