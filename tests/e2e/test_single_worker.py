"""Delivery through one gunicorn worker: token carriers, byte-for-byte frames, order."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.publishing.publisher import AsyncPublisher
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token

# Above WEBSOCKET_MAX_PAYLOAD_SIZE's default, for the 64-bit length encoding and large deflated frames.
_LIMIT = 1024 * 1024


async def _open(gateway: Gateway, user: str, carrier: str) -> ClientConnection:
    token = make_token(user)
    if carrier == "query":
        return await connect(f"{gateway.ws_url}?token={token}")
    if carrier == "subprotocol":
        return await connect(gateway.ws_url, subprotocols=["bearer", token])  # type: ignore[list-item]
    return await connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("carrier", ["query", "subprotocol", "header"])
async def test_each_token_carrier_receives_the_payload_byte_for_byte(
    gateway_one: Gateway, redis_server: RedisServer, user: str, carrier: str
) -> None:
    """A frame equals the published payload exactly, whichever way the token came."""
    payload = json.dumps({"title": "héllo ✓", "n": 1, "nested": {"a": [1, 2.5, None]}}, ensure_ascii=False)
    publisher = aioredis.Redis.from_url(redis_server.url)
    async with await _open(gateway_one, user, carrier) as ws:
        if carrier == "subprotocol":
            assert ws.subprotocol == "bearer"
        assert await publisher.publish(f"ws:{user}", payload.encode()) == 1
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(frame, str)
        assert frame.encode() == payload.encode()
    await publisher.aclose()


async def test_order_is_preserved_over_a_thousand_messages(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    """Messages published in sequence arrive in that sequence."""
    publisher = aioredis.Redis.from_url(redis_server.url)
    async with await _open(gateway_one, user, "query") as ws:
        await AsyncPublisher(client=publisher).publish_many((user, f'{{"seq":{i}}}') for i in range(1000))
        received = [json.loads(await asyncio.wait_for(ws.recv(), 5))["seq"] for _ in range(1000)]
    assert received == list(range(1000))
    await publisher.aclose()


async def test_every_frame_length_encoding_arrives_intact(redis_server: RedisServer, user: str) -> None:
    """Payloads on both sides of the 7-bit, 16-bit and 64-bit length encodings, one per write and
    several in one write, are read back whole by a conforming client (under a raised payload limit)."""
    lengths = [0, 1, 125, 126, 127, 65535, 65536, 300_000]
    payloads = ["é" * (n // 2) + "x" * (n % 2) for n in lengths]
    assert [len(p.encode()) for p in payloads] == lengths
    publisher = aioredis.Redis.from_url(redis_server.url)
    try:
        with running_gateway(redis_server.url, workers=1, WEBSOCKET_MAX_PAYLOAD_SIZE=str(_LIMIT)) as gateway:
            async with connect(f"{gateway.ws_url}?token={make_token(user)}", max_size=None) as ws:
                for payload in payloads:
                    await publisher.publish(f"ws:{user}", payload.encode())
                    assert await asyncio.wait_for(ws.recv(), 5) == payload
                batch = AsyncPublisher(client=publisher, max_payload_size=_LIMIT)
                await batch.publish_many((user, payload) for payload in payloads)
                assert [await asyncio.wait_for(ws.recv(), 5) for _ in payloads] == payloads
    finally:
        await publisher.aclose()


async def test_compressed_frames_when_deflate_is_enabled(redis_server: RedisServer, user: str) -> None:
    """With WEBSOCKET_PER_MESSAGE_DEFLATE on, permessage-deflate is negotiated and every payload
    arrives intact."""
    payloads = ["x" * 10_000, "short", "é" * 70_000]
    publisher = aioredis.Redis.from_url(redis_server.url)
    env = {"WEBSOCKET_PER_MESSAGE_DEFLATE": "true", "WEBSOCKET_MAX_PAYLOAD_SIZE": str(_LIMIT)}
    try:
        with running_gateway(redis_server.url, workers=1, **env) as gateway:
            async with connect(f"{gateway.ws_url}?token={make_token(user)}", max_size=None) as ws:
                extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                assert "permessage-deflate" in extensions
                batch = AsyncPublisher(client=publisher, max_payload_size=_LIMIT)
                await batch.publish_many((user, payload) for payload in payloads)
                assert [await asyncio.wait_for(ws.recv(), 5) for _ in payloads] == payloads
    finally:
        await publisher.aclose()


async def test_application_ping_is_answered(gateway_one: Gateway, user: str) -> None:
    """{"type":"ping"} gets {"type":"pong"}."""
    async with await _open(gateway_one, user, "query") as ws:
        await ws.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_the_worker_header_names_the_pub_sub_connection_in_client_list(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    """docs/reference.md: x-gateway-worker's id is in the worker's pub/sub client name."""
    async with await _open(gateway_one, user, "query") as ws:
        assert ws.response is not None
        worker = ws.response.headers["x-gateway-worker"]
        async with aioredis.Redis.from_url(redis_server.url) as client:
            clients = await client.client_list()
    subscribers = [c for c in clients if c.get("name") == f"gateway-sub:{worker}"]
    assert len(subscribers) == 1 and int(subscribers[0]["sub"]) >= 1, clients


async def test_subscribed_before_the_open_event(
    gateway_one: Gateway, redis_server: RedisServer, user: str
) -> None:
    """A message published the instant the client's open event fires is delivered."""
    publisher = aioredis.Redis.from_url(redis_server.url)
    for attempt in range(20):
        async with await _open(gateway_one, user, "query") as ws:
            receivers = await publisher.publish(f"ws:{user}", f'{{"attempt":{attempt}}}')
            assert receivers == 1
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"attempt": attempt}
    await publisher.aclose()


async def test_health_endpoints(gateway_one: Gateway) -> None:
    """Liveness, Redis and WebSocket state answer as the contract says."""
    assert gateway_one.get("/healthz")[0] == 200
    status, body = gateway_one.get("/healthz/redis")
    assert (status, json.loads(body)) == (200, {"redis": "ok"})
    status, body = gateway_one.get("/healthz/websocket")
    state = json.loads(body)
    assert status == 200
    assert {"connections", "users", "subscriptions", "worker", "pid", "tasks"} <= state.keys()


async def test_a_refresh_with_an_expired_token_is_answered_4001(gateway_one: Gateway, user: str) -> None:
    """A refresh whose token has just expired (clock skew, a token fetched late) gets 4001, the
    rule for an expired token (fetch a new one), not 1008's back-off with the same token."""
    async with connect(f"{gateway_one.ws_url}?token={make_token(user)}") as ws:
        await ws.send(json.dumps({"type": "refresh", "token": make_token(user, ttl=-60)}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert (ws.close_code, ws.close_reason) == (4001, "token_expired")
