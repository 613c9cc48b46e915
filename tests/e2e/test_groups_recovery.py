"""Exactly once, in order per source, for group and broadcast messages too, across a drain (resume
elsewhere with the connection's one cursor) and a deaf worker (pub/sub connection killed, the
server-side gap fill). Real Redis, real gunicorn, real clients, the publisher library."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.publishing.publisher import AsyncPublisher
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually

_ROUNDS = 150
_RATE = 200.0  # rounds per second; a round is one message from each source


async def _open(gateway: Gateway, user: str, team: str, query: str) -> ClientConnection:
    token = make_token(user, groups=[team])
    return await connect(f"{gateway.ws_url}?token={token}{query}", open_timeout=10)


async def _stream(publisher: AsyncPublisher, user: str, team: str, first: int = 0) -> None:
    """Paced like a live backend: each round one message to the user, the group and everyone."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(first, _ROUNDS):
        await publisher.publish(user, {"seq": seq, "to": "user"})
        await publisher.publish_group(team, {"seq": seq, "to": "group"})
        await publisher.broadcast({"seq": seq, "to": "everyone"})
        await asyncio.sleep(max(0.0, start + (seq - first + 1) / _RATE - loop.time()))


class _Reader:
    """Every message frame's seq per source (None: the user's, a group id, "*"), and the cursor."""

    def __init__(self) -> None:
        self.seqs: dict[str | None, list[int]] = {}
        self.recoveries: list[dict[str, Any]] = []
        self.position: str | None = None
        self.closes: list[int] = []

    @property
    def count(self) -> int:
        return sum(len(seqs) for seqs in self.seqs.values())

    async def read(self, ws: ClientConnection, until: int) -> None:
        try:
            while self.count < until:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["type"] == "recovery":
                    self.recoveries.append(frame)
                elif frame["type"] == "message":
                    self.seqs.setdefault(frame.get("group"), []).append(frame["data"]["seq"])
                    self.position = frame["position"]
        except ConnectionClosed as exc:
            self.closes.append(exc.rcvd.code if exc.rcvd else 1006)


async def test_a_drained_host_loses_and_doubles_nothing_of_any_source_for_a_client_that_resumes(
    redis_server: RedisServer, user: str
) -> None:
    """SIGTERM of the host while user, group and broadcast messages flow: the client resumes on
    the other host with the last frame's position, and gets every message once, in order per
    source."""
    team = f"team-{uuid.uuid4().hex[:10]}"
    reader = _Reader()
    with (
        running_gateway(redis_server.url, workers=1, WEBSOCKET_DRAIN_WINDOW="1") as host_a,
        # The cap bounds a resume across its three sources: room for the restart's gap of all three.
        running_gateway(redis_server.url, workers=1, WEBSOCKET_HISTORY_REPLAY_CAP="1000") as host_b,
    ):
        publisher = AsyncPublisher(redis_server.url)
        first = await _open(host_a, user, team, "&envelope=1")
        stream = asyncio.create_task(_stream(publisher, user, team))
        reading = asyncio.create_task(reader.read(first, 3 * _ROUNDS))

        async def midway() -> bool:
            return reader.count >= _ROUNDS

        await eventually(midway, timeout=20)
        await asyncio.to_thread(host_a.stop, signal.SIGTERM)
        await asyncio.wait_for(reading, 20)
        assert reader.closes == [1012] and reader.position is not None
        resumed = await _open(host_b, user, team, f"&since={reader.position}")
        await stream
        await asyncio.wait_for(reader.read(resumed, 3 * _ROUNDS), 30)
        await resumed.close()
        await publisher.aclose()
    assert reader.seqs == {None: list(range(_ROUNDS)), team: list(range(_ROUNDS)), "*": list(range(_ROUNDS))}
    assert [r["recovered"] for r in reader.recoveries] == [True]


async def test_a_killed_pubsub_connection_costs_no_group_or_broadcast_message(
    own_redis: RedisServer, user: str
) -> None:
    """CLIENT KILL TYPE pubsub, twice, while the three sources flow: the gap fill delivers what
    the worker missed of each, before newer ones, once, to raw and envelope sockets alike."""
    team = f"team-{uuid.uuid4().hex[:10]}"
    with running_gateway(own_redis.url, workers=1) as gateway:
        raw = await _open(gateway, user, team, "")
        env = await _open(gateway, user, team, "&envelope=1")
        publisher = AsyncPublisher(own_redis.url)
        stream = asyncio.create_task(_stream(publisher, user, team))
        raw_seqs: dict[str, list[int]] = {}
        reader = _Reader()

        async def read_raw() -> None:
            for _ in range(3 * _ROUNDS):
                data = json.loads(await asyncio.wait_for(raw.recv(), 15))
                raw_seqs.setdefault(data["to"], []).append(data["seq"])

        readers = asyncio.gather(read_raw(), reader.read(env, 3 * _ROUNDS))
        killer = own_redis.client()
        for at in (60, 200):

            async def reached(at: int = at) -> bool:
                return sum(map(len, raw_seqs.values())) >= at

            await eventually(reached, timeout=20)
            assert killer.client_kill_filter(_type="pubsub") >= 1
        await stream
        await asyncio.wait_for(readers, 30)
        everything = list(range(_ROUNDS))
        assert raw_seqs == {"user": everything, "group": everything, "everyone": everything}
        assert reader.seqs == {
            None: list(range(_ROUNDS)),
            team: list(range(_ROUNDS)),
            "*": list(range(_ROUNDS)),
        }
        assert not reader.recoveries and not reader.closes
        await env.send('{"type":"ping"}')
        assert json.loads(await asyncio.wait_for(env.recv(), 5)) == {"type": "pong"}
        losses = [line for line in gateway.log().splitlines() if "lost" in line and "pub/sub" in line]
        assert len(losses) >= 2, "the pub/sub connection was not lost twice"
        await raw.close()
        await env.close()
        await publisher.aclose()
