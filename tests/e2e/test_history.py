"""History delivery, envelope mode and resume with ?since=, through a real gunicorn worker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from gateway.publishing.publisher import AsyncPublisher, Publisher
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually, in_thread


async def _open(gateway: Gateway, user: str, query: str = "") -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}{query}", open_timeout=10)


async def _frames(ws: ClientConnection, count: int) -> list[Any]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def _quiet(ws: ClientConnection) -> bool:
    """Nothing more arrives: a ping's pong is the next frame."""
    await ws.send('{"type":"ping"}')
    return json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_raw_sockets_get_history_messages_byte_for_byte_mixed_with_plain_ones_in_order(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    plain = aioredis.Redis.from_url(redis_server.url)
    publisher = AsyncPublisher(redis_server.url)
    async with await _open(gateway_one, user) as raw, await _open(gateway_one, user, "&envelope=1") as env:
        for i in range(6):
            if i % 2:
                await plain.publish(f"ws:{user}", f'{{"plain":{i}}}')
            else:
                await publisher.publish(user, {"history": i})
        await publisher.publish(user, "not json")
        received = [await asyncio.wait_for(raw.recv(), 5) for _ in range(7)]
        assert received == [
            '{"history":0}',
            '{"plain":1}',
            '{"history":2}',
            '{"plain":3}',
            '{"history":4}',
            '{"plain":5}',
            "not json",
        ]
        envelopes = await _frames(env, 7)
        assert [e["data"] for e in envelopes] == [
            {"history": 0},
            {"plain": 1},
            {"history": 2},
            {"plain": 3},
            {"history": 4},
            {"plain": 5},
            "not json",
        ]
        assert all(e["type"] == "message" for e in envelopes)
        assert ["position" in e for e in envelopes] == [True, False, True, False, True, False, True]
    await publisher.aclose()
    await plain.aclose()


async def test_since_replays_what_was_missed_then_goes_live(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    publisher = AsyncPublisher(redis_server.url)
    async with await _open(gateway_one, user, "&envelope=1") as ws:
        await publisher.publish_many([(user, {"n": i}) for i in range(3)])
        seen = await _frames(ws, 3)
    last = seen[-1]["position"]
    missed = await publisher.publish_many([(user, {"n": i}) for i in range(3, 8)])
    async with await _open(gateway_one, user, f"&since={last}") as ws:
        assert await _frames(ws, 1) == [{"type": "recovery", "recovered": True, "replayed": 5}]
        replayed = await _frames(ws, 5)
        assert [f["data"]["n"] for f in replayed] == [3, 4, 5, 6, 7]
        assert [f["position"] for f in replayed] == [m.position for m in missed]
        await publisher.publish(user, {"n": 8})
        assert [f["data"] for f in await _frames(ws, 1)] == [{"n": 8}]
        assert await _quiet(ws)
    # Up to date: recovered, nothing to replay.
    async with await _open(gateway_one, user, f"&since={replayed[-1]['position']}") as ws:
        await publisher.publish(user, {"n": 9})
        frames = await _frames(ws, 2)
        assert frames[0] == {"type": "recovery", "recovered": True, "replayed": 1}
        assert frames[1]["data"] == {"n": 8}
        assert (await _frames(ws, 1))[0]["data"] == {"n": 9}
    await publisher.aclose()


def _position_of(redis_url: str, user: str) -> str:
    publisher = Publisher(redis_url)
    position = publisher.publish(user, {"secret": user}).position
    publisher.close()
    assert position is not None
    return position


@pytest.mark.parametrize(
    "since",
    [
        "garbage",
        "",
        "12",
        "-abc",
        "1-",
        "1-" + "a" * 5000,
        "9" * 40 + "-abc",
        "1-zz%20zz",
        "1-ep\u00e9",
        "{other}",
        "{future}",
        "{other_epoch}",
    ],
)
async def test_a_bad_since_is_not_recovered_and_replays_nothing(
    gateway_one: Gateway, redis_server: RedisServer, user: str, since: str
) -> None:
    """Garbage, truncated, huge, another user's position, the future, another epoch: recovered
    false, nothing replayed, never another user's data, and the socket then works."""
    other = _position_of(redis_server.url, user + "-other")
    mine = _position_of(redis_server.url, user)
    offset, _, epoch = mine.partition("-")
    since = since.format(other=other, future=f"{int(offset) + 5}-{epoch}", other_epoch=f"0-{epoch}x")
    async with await _open(gateway_one, user, f"&since={since}") as ws:
        first = (await _frames(ws, 1))[0]
        assert first["type"] == "recovery" and first["recovered"] is False and first["replayed"] == 0
        publisher = AsyncPublisher(redis_server.url)
        await publisher.publish(user, "live")
        await publisher.aclose()
        assert (await _frames(ws, 1))[0]["data"] == "live"
        assert await _quiet(ws)


async def test_flushall_between_disconnect_and_resume_is_not_recovered(
    own_redis: RedisServer, user: str
) -> None:
    with running_gateway(own_redis.url, workers=1) as gateway:
        publisher = AsyncPublisher(own_redis.url)
        async with await _open(gateway, user, "&envelope=1") as ws:
            await publisher.publish(user, "before")
            position = (await _frames(ws, 1))[0]["position"]
        await publisher.publish(user, "missed")
        own_redis.client().flushall()
        await publisher.publish(user, "after the flush")
        async with await _open(gateway, user, f"&since={position}") as ws:
            first = (await _frames(ws, 1))[0]
            assert first == {"type": "recovery", "recovered": False, "replayed": 0, "reason": "epoch"}
            assert await _quiet(ws)
        await publisher.aclose()


async def test_the_length_cap_and_the_replay_cap_bound_a_resume(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    short = AsyncPublisher(redis_server.url, history_length=5)
    first = await short.publish(user, 0)
    await short.publish_many([(user, i) for i in range(1, 7)])
    async with await _open(gateway_one, user, f"&since={first.position}") as ws:
        assert (await _frames(ws, 1))[0] == {
            "type": "recovery",
            "recovered": False,
            "replayed": 0,
            "reason": "trimmed",
        }
    # The default cap (100): a gap of 101 is not replayed, one of 100 is, in full. The history
    # keeps the first message too: a user-only position whose own entry was pushed out is
    # trimmed once a group or the broadcast has messages (tests/e2e/test_cursor_attacks.py).
    await short.aclose()
    publisher = AsyncPublisher(redis_server.url, history_length=101)
    other = user + "-long"
    results = await publisher.publish_many([(other, i) for i in range(101)])
    offset, _, epoch = str(results[0].position).partition("-")
    async with await _open(gateway_one, other, f"&since={int(offset) - 1}-{epoch}") as ws:
        assert (await _frames(ws, 1))[0]["reason"] == "too_long"
    async with await _open(gateway_one, other, f"&since={results[0].position}") as ws:
        assert (await _frames(ws, 1))[0] == {"type": "recovery", "recovered": True, "replayed": 100}
        assert [f["data"] for f in await _frames(ws, 100)] == list(range(1, 101))
    await publisher.aclose()


async def test_an_expired_history_is_not_recovered(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    publisher = AsyncPublisher(redis_server.url, history_ttl=0.3)
    position = (await publisher.publish(user, "soon gone")).position
    client = aioredis.Redis.from_url(redis_server.url)

    async def gone() -> bool:
        return not await client.exists(f"{{ws:{user}}}:meta")

    await eventually(gone, timeout=10)
    async with await _open(gateway_one, user, f"&since={position}") as ws:
        assert (await _frames(ws, 1))[0] == {
            "type": "recovery",
            "recovered": False,
            "replayed": 0,
            "reason": "lost",
        }
    await client.aclose()
    await publisher.aclose()


async def test_recoveries_replays_and_history_messages_are_counted(own_redis: RedisServer, user: str) -> None:
    with running_gateway(own_redis.url, workers=1) as gateway:
        publisher = AsyncPublisher(own_redis.url)
        async with await _open(gateway, user, "&envelope=1") as ws:
            first = await publisher.publish(user, 1)
            await _frames(ws, 1)
        await publisher.publish_many([(user, 2), (user, 3)])
        async with await _open(gateway, user, f"&since={first.position}") as ws:
            assert (await _frames(ws, 1))[0]["replayed"] == 2
            await _frames(ws, 2)
        async with await _open(gateway, user, "&since=nonsense") as ws:
            assert (await _frames(ws, 1))[0]["reason"] == "invalid"

        def counted() -> bool:
            samples = scrape(gateway)
            return (
                value(samples, "websocket_recoveries_total", result="recovered") == 1
                and value(samples, "websocket_recoveries_total", result="invalid") == 1
                and value(samples, "websocket_messages_replayed_total") == 2
                and value(samples, "websocket_history_messages_received_total") == 1
            )

        await eventually(in_thread(counted), timeout=10)
        await publisher.aclose()
