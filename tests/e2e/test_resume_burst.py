"""A burst for the user while a resuming socket waits in admission: whatever arrives before the
accept waits in the socket's outbox, which holds WEBSOCKET_SEND_QUEUE_SIZE frames. A socket whose
outbox cannot hold what arrived is refused (1013 ``admission_backlog``: resuming later from the
same position loses nothing), never told ``recovered:true`` and handed a hole."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.publishing.publisher import AsyncPublisher
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape, value
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually

_ROUNDS = 30
_REPLAYED = 20
_PLAIN = 400
_PAD = "x" * 50_000  # large entries: the resume's read takes a while


class _Round:
    """One resume: what the client received, or the close that refused it."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.close: int | None = None

    async def run(self, gateway: Gateway, user: str, since: str, last_seq: int) -> None:
        url = f"{gateway.ws_url}?token={make_token(user)}&since={since}"
        try:
            async with connect(url, open_timeout=15, max_size=None) as ws:
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    self.frames.append(frame)
                    if frame["type"] == "message" and frame["data"].get("seq") == last_seq:
                        return
        except ConnectionClosed as exc:
            self.close = exc.rcvd.code if exc.rcvd else 1006


async def _subscribed(redis: aioredis.Redis, user: str) -> bool:
    return dict(await redis.pubsub_numsub(f"ws:{user}")).get(f"ws:{user}".encode(), 0) == 1


async def test_a_burst_during_a_resume_is_delivered_whole_or_refused(own_redis: RedisServer) -> None:
    """A resume 20 large entries back while a backend publishes a history message, 400 plain ones
    and another history message; in every round the client either gets the recovery, the replay,
    both history messages and all 400 plain ones in order, or is refused before any frame."""
    redis = aioredis.Redis.from_url(own_redis.url)
    history = AsyncPublisher(own_redis.url)
    plain = AsyncPublisher(own_redis.url, history=False)
    refused = 0
    with running_gateway(own_redis.url, workers=1) as gateway:
        bystander_id = f"bystander-{uuid.uuid4().hex[:8]}"
        bystander = await connect(f"{gateway.ws_url}?token={make_token(bystander_id)}", open_timeout=15)
        for round_ in range(_ROUNDS):
            user = f"burst-{round_}-{uuid.uuid4().hex[:8]}"
            seeded = await history.publish_many(
                [(user, {"seq": n, "pad": _PAD}) for n in range(_REPLAYED + 1)]
            )
            since = seeded[0].position
            assert since is not None
            client = _Round()
            reading = asyncio.create_task(client.run(gateway, user, since, _REPLAYED + 2))
            # The user's channel is subscribed: the socket is in admission, reading its history.
            await eventually(
                lambda user=user: _subscribed(redis, user), timeout=15, what="subscribed", interval=0
            )
            await history.publish(user, {"seq": _REPLAYED + 1})
            await plain.publish_many([(user, {"plain": n}) for n in range(_PLAIN)])
            await history.publish(user, {"seq": _REPLAYED + 2})
            await asyncio.wait_for(reading, 30)
            # Another user on the same worker is served on time throughout.
            await plain.publish(bystander_id, {"round": round_})
            assert json.loads(await asyncio.wait_for(bystander.recv(), 2)) == {"round": round_}
            if client.close is not None and not client.frames:
                assert client.close == 1013, f"round {round_}: refused with {client.close}"
                refused += 1
                # Resuming again from the same position, the burst over, misses no history message.
                retry = _Round()
                await asyncio.wait_for(retry.run(gateway, user, since, _REPLAYED + 2), 30)
                assert retry.close is None, f"round {round_}: the retry closed with {retry.close}"
                assert retry.frames[0] == {"type": "recovery", "recovered": True, "replayed": _REPLAYED + 2}
                assert [f["data"]["seq"] for f in retry.frames[1:]] == list(range(1, _REPLAYED + 3))
                continue
            assert client.close is None, (
                f"round {round_}: closed {client.close} after {len(client.frames)} frames"
            )
            recovery = client.frames[0]
            assert recovery["type"] == "recovery" and recovery["recovered"] is True, recovery
            # The read may run after one or both history messages of the burst: then it replays them.
            assert _REPLAYED <= recovery["replayed"] <= _REPLAYED + 2, recovery
            seqs = [f["data"]["seq"] for f in client.frames[1:] if "seq" in f["data"]]
            assert seqs == list(range(1, _REPLAYED + 3)), f"round {round_}: a hole in {seqs}"
            plains = [f["data"]["plain"] for f in client.frames[1:] if "plain" in f["data"]]
            assert plains == list(range(_PLAIN)), f"round {round_}: {len(plains)} plain messages"
        if refused:
            samples = scrape(gateway)
            assert value(samples, "websocket_rejections_total", reason="admission_backlog") == refused
            assert gateway.log().count("refused admission_backlog") == refused
        await bystander.close()
    await history.aclose()
    await plain.aclose()
    await redis.aclose()
