"""Hostile payloads from publishers and clients: each costs at most its own message, and a
bystander on the same worker gets every message on time."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway.publishing.publisher import AsyncPublisher
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.stalled_client import StalledClient, worker_rss_kib
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

DEEP = "[" * 1500 + "]" * 1500


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    # One worker: the abuser and the bystander share it.
    with running_gateway(redis_server.url, workers=1) as gw:
        yield gw


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def bystander(gateway: Gateway) -> AsyncIterator[tuple[ClientConnection, str]]:
    user = "bystander"
    async with connect(f"{gateway.ws_url}?token={make_token(user)}") as ws:
        yield ws, user


async def _open(gateway: Gateway, user: str, query: str = "") -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}{query}", open_timeout=10, max_size=None)


async def _answers_ping(ws: ClientConnection) -> list[str]:
    """Every frame the socket got before the pong to a ping: it is still served."""
    await ws.send('{"type":"ping"}')
    frames: list[str] = []
    while (frame := str(await asyncio.wait_for(ws.recv(), 10))) != '{"type":"pong"}':
        frames.append(frame)
    return frames


def _new_log(gateway: Gateway, start: int) -> str:
    return gateway.log()[start:]


HOSTILE = [
    b"\xffHe " + b"9" * 5000 + b" x",  # int() raises on 5,000 digits
    b'\xffHa","group":"forged 1 {}',  # an epoch that would forge envelope fields
    b"\xffHep 1 " + DEEP.encode(),  # RecursionError in Python's JSON parser
    DEEP.encode(),
    b"\xffHep 2 " + b"\x01" * 65_000,  # its envelope escapes to 390 KB
    b"\xff",
    b"\xffH",
    b"\xffX what",
    b"\xffC\xff\xfe",
    b"\xfe\xfe",
]


async def test_hostile_raw_publishes_cost_the_bystander_no_message(
    gateway: Gateway,
    publisher: aioredis.Redis,
    bystander: tuple[ClientConnection, str],
) -> None:
    """A publisher's raw PUBLISHes of malformed gateway frames, deep JSON and oversized escapes
    to a user with a raw and an envelope socket, each followed by five messages to a bystander
    on the same worker: the bystander gets all of them in order, the pub/sub session is kept,
    both sockets of the target stay open, and no envelope carries a forged field."""
    ws, user = bystander
    reconnects = value(scrape(gateway), "websocket_redis_reconnects_total")
    log_start = len(gateway.log())
    async with await _open(gateway, "target") as raw, await _open(gateway, "target", "&envelope=1") as env:
        for round_, hostile in enumerate(HOSTILE):
            assert await publisher.publish("ws:target", hostile) == 1
            for i in range(5):
                assert await publisher.publish(f"ws:{user}", b'{"n":%d}' % (5 * round_ + i)) == 1
        received = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(5 * len(HOSTILE))]
        assert received == [{"n": n} for n in range(5 * len(HOSTILE))]
        assert await _answers_ping(raw) == [DEEP, DEEP, "\x01" * 65_000]
        envelopes = [json.loads(frame) for frame in await _answers_ping(env)]
    assert envelopes == [
        {"type": "message", "position": "1-ep", "data": DEEP},
        {"type": "message", "data": DEEP},
    ]
    assert value(scrape(gateway), "websocket_redis_reconnects_total") == reconnects
    assert "Traceback" not in _new_log(gateway, log_start)


async def test_deep_json_with_history_costs_no_envelope_socket_and_no_resume(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """JSON nested 1,500 deep published with history: the envelope socket gets it as a string
    and stays open, and a resume from before it is answered (not an HTTP 500) and replays it."""
    publisher = AsyncPublisher(redis_server.url)
    try:
        async with await _open(gateway, "deep", "&envelope=1") as env:
            first = await publisher.publish("deep", {"n": 0})
            deep = await publisher.publish("deep", DEEP)
            # Both arrive (pub/sub is not ordered with the socket's own ping), then the socket
            # still answers.
            frames = [json.loads(await asyncio.wait_for(env.recv(), 10)) for _ in range(2)]
            assert await _answers_ping(env) == []
        assert [frame["data"] for frame in frames] == [{"n": 0}, DEEP]
        try:
            resumed = await _open(gateway, "deep", f"&since={first.position}")
        except InvalidStatus as exc:
            raise AssertionError(f"the resume was refused: {exc.response.status_code}") from exc
        async with resumed:
            assert json.loads(await asyncio.wait_for(resumed.recv(), 10)) == {
                "type": "recovery",
                "recovered": True,
                "replayed": 1,
            }
            assert json.loads(await asyncio.wait_for(resumed.recv(), 10)) == {
                "type": "message",
                "position": deep.position,
                "data": DEEP,
            }
    finally:
        await publisher.aclose()
    await _bystander_served(redis_server, bystander)


async def test_a_client_frame_nested_2000_deep_is_ignored(
    gateway: Gateway, redis_server: RedisServer, bystander: tuple[ClientConnection, str]
) -> None:
    """Like any frame the gateway does not understand: no close, no traceback."""
    log_start = len(gateway.log())
    async with await _open(gateway, "nested-client") as ws:
        await ws.send('{"type":"ping","x":' + "[" * 2000 + "]" * 2000 + "}")
        await ws.send('{"type":"refresh","token":' + "[" * 3000)
        assert await _answers_ping(ws) == []
    assert "Traceback" not in _new_log(gateway, log_start)
    await _bystander_served(redis_server, bystander)


async def _bystander_served(redis_server: RedisServer, bystander: tuple[ClientConnection, str]) -> None:
    ws, user = bystander
    with redis_server.client() as client:
        assert client.publish(f"ws:{user}", b'{"still":"here"}') == 1
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"still": "here"}


async def _round_trips(
    publisher: aioredis.Redis, bystander: tuple[ClientConnection, str], seconds: float
) -> list[float]:
    ws, user = bystander
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = time.monotonic()
        assert await publisher.publish(f"ws:{user}", b'{"probe":1}') == 1
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"probe": 1}
        times.append(time.monotonic() - sent)
        await asyncio.sleep(0.005)
    return times


# Each kind's payload, and how many are published (fewer of the large one: 200 of them are
# 13 MB through Redis already).
BAD = {
    "invalid_utf8": (b"\xfe\xfe", 2000),
    "bad_control": (b"\xffCdance", 2000),
    "malformed": (b"\xffHe x y", 2000),
    "too_large": (b"x" * 65_537, 200),
}


# Publishes per second: a steady flood. The bystander's messages share the worker's one pub/sub
# connection with it, so each waits behind what was published before it; one burst of thousands
# would measure that queue, not what each bad publish costs.
FLOOD_RATE = 2000
BATCH = 100


def _flood(redis_server: RedisServer) -> None:
    payloads = [payload for payload, count in BAD.values() for _ in range(count)]
    random.Random(7).shuffle(payloads)
    started = time.monotonic()
    with redis_server.client() as client:
        for start in range(0, len(payloads), BATCH):
            batch = payloads[start : start + BATCH]
            pipe = client.pipeline(transaction=False)
            for payload in batch:
                pipe.publish("ws:flooded", payload)
            assert pipe.execute() == [1] * len(batch)
            # Pacing a load generator: the next batch leaves when the rate says so.
            time.sleep(max(0.0, started + (start + BATCH) / FLOOD_RATE - time.monotonic()))


async def test_a_flood_of_bad_publishes_is_counted_in_full_and_logged_in_a_few_lines(
    gateway: Gateway,
    redis_server: RedisServer,
    publisher: aioredis.Redis,
    bystander: tuple[ClientConnection, str],
) -> None:
    """Thousands of bad publishes of each kind: every one is counted, each kind's log line is
    written a few times only (a line per drop floods the log), and the bystander's round trips
    stay within twice what they were."""
    before = scrape(gateway)
    log_start = len(gateway.log())
    quiet = await _round_trips(publisher, bystander, 1.0)
    async with await _open(gateway, "flooded"):
        flooding = asyncio.create_task(asyncio.to_thread(_flood, redis_server))
        during: list[float] = []
        while not flooding.done():
            during += await _round_trips(publisher, bystander, 0.2)
        await flooding

        def all_counted() -> bool:
            after = scrape(gateway)
            return all(
                value(after, "websocket_messages_dropped_total", reason=reason)
                - value(before, "websocket_messages_dropped_total", reason=reason)
                == count
                for reason, (_, count) in BAD.items()
            )

        await eventually(in_thread(all_counted), timeout=20, what="every bad publish to be counted")
    lines = [line for line in _new_log(gateway, log_start).splitlines() if "dropped" in line]
    assert 4 <= len(lines) <= 4 * 20, lines[:10]
    assert statistics.median(during) <= 2 * statistics.median(quiet) + 0.005, (
        statistics.median(quiet),
        statistics.median(during),
    )


async def test_the_envelope_queue_of_a_client_that_does_not_read_stays_within_its_bound(
    gateway: Gateway, publisher: aioredis.Redis, bystander: tuple[ClientConnection, str]
) -> None:
    """250 payloads of 65,000 control characters (each escapes to a 390 KB envelope) to an
    envelope socket that never reads: the worker's memory grows by less than the documented
    bound of one queue (WEBSOCKET_SEND_QUEUE_SIZE x WEBSOCKET_MAX_PAYLOAD_SIZE, 16 MiB)."""
    (worker,) = gateway.worker_pids()
    stalled = await asyncio.to_thread(
        StalledClient, f"{gateway.ws_url}?token={make_token('stalled')}&envelope=1"
    )
    try:
        rss_before = worker_rss_kib(worker)
        payload = b"\x01" * 65_000
        for _ in range(5):
            async with publisher.pipeline(transaction=False) as pipe:
                for _ in range(50):
                    pipe.publish("ws:stalled", payload)
                await pipe.execute()
        await _round_trips(publisher, bystander, 0.5)  # the worker has read every publish
        grown = worker_rss_kib(worker) - rss_before
    finally:
        stalled.close()
    assert grown < 24 * 1024, f"the worker grew by {grown} KiB"
