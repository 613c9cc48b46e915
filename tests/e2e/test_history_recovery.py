"""Exactly once, in order, across the two ways a client misses messages: its host goes away
(drain, resume elsewhere with ?since=) and its worker goes deaf (pub/sub connection killed,
server-side gap fill). Real Redis, real gunicorn, real clients, the publisher library."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.publishing.publisher import AsyncPublisher
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually

_MESSAGES = 400
_RATE = 300.0  # messages per second, per user


async def _open(gateway: Gateway, user: str, query: str) -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}{query}", open_timeout=10)


async def _publish(publisher: AsyncPublisher, users: list[str], count: int = _MESSAGES) -> None:
    """Paced like a live backend: one message per user every 1/_RATE s."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(count):
        await publisher.publish_many([(user, {"seq": seq}) for user in users])
        await asyncio.sleep(max(0.0, start + (seq + 1) / _RATE - loop.time()))


class _Client:
    """One envelope client: records every data seq and recovery frame, resumes with since."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.seqs: list[int] = []
        self.recoveries: list[dict[str, Any]] = []
        self.position: str | None = None
        self.closes: list[int] = []
        self.connected = False

    async def follow(self, first: Gateway, then: Gateway) -> None:
        ws = await _open(first, self.user, "&envelope=1")
        self.connected = True  # the accept: the user's channel is subscribed
        await self._read(ws)
        assert self.position is not None
        ws = await _open(then, self.user, f"&since={self.position}")
        await self._read(ws)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            while len(self.seqs) < _MESSAGES:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["type"] == "recovery":
                    self.recoveries.append(frame)
                    continue
                self.seqs.append(frame["data"]["seq"])
                self.position = frame["position"]
            await ws.close()
        except ConnectionClosed as exc:
            self.closes.append(exc.rcvd.code if exc.rcvd else 1006)


async def test_a_drained_host_loses_nothing_for_clients_that_resume_elsewhere(
    redis_server: RedisServer,
) -> None:
    users = [f"drain-{i}-{id(redis_server)}" for i in range(5)]
    with (
        running_gateway(redis_server.url, workers=1, WEBSOCKET_DRAIN_WINDOW="1") as host_a,
        running_gateway(redis_server.url, workers=1) as host_b,
    ):
        clients = [_Client(user) for user in users]
        followers = [asyncio.create_task(c.follow(host_a, host_b)) for c in clients]

        async def all_connected() -> bool:
            return all(c.connected for c in clients)

        async def all_open() -> bool:
            return all(c.position is not None for c in clients)

        await eventually(all_connected, timeout=10)
        publisher = AsyncPublisher(redis_server.url)
        # A first message per user, so every client has a position before the stream starts.
        await publisher.publish_many([(u, {"seq": 0}) for u in users])
        await eventually(all_open, timeout=10)
        stream = asyncio.create_task(_publish_from(publisher, users, 1))

        async def midway() -> bool:
            return all(len(c.seqs) >= 60 for c in clients)

        await eventually(midway, timeout=20)
        await asyncio.to_thread(host_a.stop, signal.SIGTERM)
        await stream
        await asyncio.wait_for(asyncio.gather(*followers), 30)
        await publisher.aclose()
    for client in clients:
        assert client.closes == [1012], client.closes
        assert client.seqs == list(range(_MESSAGES)), client.user
        assert len(client.recoveries) == 1 and client.recoveries[0]["recovered"] is True


async def _publish_from(publisher: AsyncPublisher, users: list[str], first: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(first, _MESSAGES):
        await publisher.publish_many([(user, {"seq": seq}) for user in users])
        await asyncio.sleep(max(0.0, start + (seq - first + 1) / _RATE - loop.time()))


async def test_killing_the_pubsub_connection_mid_stream_loses_and_doubles_nothing(
    own_redis: RedisServer, user: str
) -> None:
    """CLIENT KILL TYPE pubsub, twice, while a stream runs: the gap fill delivers what the worker
    missed, before newer messages, once, to raw and envelope sockets; no socket is closed."""
    with running_gateway(own_redis.url, workers=1) as gateway:
        raw = await _open(gateway, user, "")
        env = await _open(gateway, user, "&envelope=1")
        publisher = AsyncPublisher(own_redis.url)
        stream = asyncio.create_task(_publish(publisher, [user]))
        raw_seqs: list[int] = []
        env_frames: list[dict[str, Any]] = []

        async def read_raw() -> None:
            while len(raw_seqs) < _MESSAGES:
                raw_seqs.append(json.loads(await asyncio.wait_for(raw.recv(), 15))["seq"])

        async def read_env() -> None:
            while len([f for f in env_frames if f["type"] == "message"]) < _MESSAGES:
                env_frames.append(json.loads(await asyncio.wait_for(env.recv(), 15)))

        readers = asyncio.gather(read_raw(), read_env())
        killer = own_redis.client()
        for at in (80, 200):

            async def reached(at: int = at) -> bool:
                return len(raw_seqs) >= at

            await eventually(reached, timeout=20)
            assert killer.client_kill_filter(_type="pubsub") >= 1
        await stream
        await asyncio.wait_for(readers, 30)
        assert raw_seqs == list(range(_MESSAGES))
        assert [f["data"]["seq"] for f in env_frames if f["type"] == "message"] == list(range(_MESSAGES))
        assert not [f for f in env_frames if f["type"] == "recovery"]
        # Both sockets are still open and served.
        await raw.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(raw.recv(), 5)) == {"type": "pong"}
        await env.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(env.recv(), 5)) == {"type": "pong"}
        losses = [line for line in gateway.log().splitlines() if "lost" in line and "pub/sub" in line]
        assert len(losses) >= 2, "the pub/sub connection was not lost twice"
        samples = scrape(gateway)
        filled = value(samples, "websocket_gap_fills_total", result="filled")
        filled += value(samples, "websocket_gap_fills_total", result="nothing_missed")
        assert filled >= 2
        await raw.close()
        await env.close()
        await publisher.aclose()


async def test_a_gap_right_after_connecting_is_filled_too(own_redis: RedisServer, user: str) -> None:
    """No history message reached the user on this worker yet: the gap fill reads from when its
    connection arrived. Publishes land while the worker has no pub/sub connection."""
    with running_gateway(own_redis.url, workers=1) as gateway:
        raw = await _open(gateway, user, "")
        publisher = AsyncPublisher(own_redis.url)
        await publisher.publish("warm-up", "x")  # connected and the script loaded: publishes are quick
        killer = own_redis.client()
        for round_ in range(3):
            assert killer.client_kill_filter(_type="pubsub") >= 1
            # Right after the kill: the worker reconnects after a back-off of 50 ms or more.
            await publisher.publish_many([(user, {"round": round_, "n": n}) for n in range(5)])
            frames = [json.loads(await asyncio.wait_for(raw.recv(), 10)) for _ in range(5)]
            assert frames == [{"round": round_, "n": n} for n in range(5)]
        await raw.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(raw.recv(), 5)) == {"type": "pong"}
        await raw.close()
        await publisher.aclose()
