"""Gap fills that overlap: the pub/sub connection is lost again while the first gap's read is in
flight. Each outage's gap is read and delivered, in order, once; what arrives meanwhile is held
up to a cap, past which the fill is given up loudly (envelope sockets: ``recovered:false``).

Real Redis and the real broker; only the history reader's reply is held back (a gate), to stand
for a slow command path."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from gateway.broker import BrokerSetup
from gateway.broker.redis import RedisBroker
from gateway.history.gap import GapFiller
from gateway.history.reader import HistoryReader, Reading
from gateway.hub import Hub
from gateway.publishing.publisher import Publisher
from harness.outbox import Outbox
from harness.redis_server import RedisServer
from harness.waiting import eventually

_HELD_CAP = 16


class Socket(Outbox):
    """An outbox nothing may end, read back as what its client would see."""

    def __init__(self, envelope: bool) -> None:
        super().__init__(envelope, may_end=False)

    def data(self) -> list[str]:
        """The published payloads this socket got (envelope: the data of message frames)."""
        if not self.envelope:
            return [frame.decode() for frame in self.frames]
        frames = [json.loads(frame) for frame in self.frames]
        return [f["data"] for f in frames if f["type"] == "message"]

    def recoveries(self) -> list[dict[str, object]]:
        frames = [json.loads(frame) for frame in self.frames] if self.envelope else []
        return [f for f in frames if f["type"] == "recovery"]


class GatedReader(HistoryReader):
    """Reads at once, but the first read's reply comes back only when the gate opens."""

    def __init__(self, client: aioredis.Redis, cap: int) -> None:
        super().__init__(client, "ws", cap)
        self.gate = asyncio.Event()
        self.reads = 0
        self.gaps_read = 0
        self.returned = 0

    async def read_many(self, gaps: Sequence[tuple[str, str, int]]) -> list[Reading]:
        readings = await super().read_many(gaps)
        self.reads += 1
        self.gaps_read += len(gaps)
        if self.reads == 1:
            await self.gate.wait()
        self.returned += 1  # what follows in the gap filler runs before it next yields
        return readings


@dataclass
class Worker:
    """One worker's hub, gap filler and broker, and what its broker reported."""

    hub: Hub
    reader: GatedReader
    broker: RedisBroker
    received: list[bytes]
    resubscribed: list[str]


@pytest.fixture
async def worker(own_redis: RedisServer, user: str) -> AsyncIterator[Worker]:
    client = aioredis.Redis.from_url(own_redis.url)
    hub = Hub(max_held=_HELD_CAP)
    reader = GatedReader(client, 100)
    gap = GapFiller(hub, reader)
    received: list[bytes] = []
    resubscribed: list[str] = []

    def on_message(user_id: str, payload: bytes) -> None:
        received.append(payload)
        hub.deliver(user_id, payload)

    def on_resubscribed(user_id: str) -> None:
        resubscribed.append(user_id)
        gap.resubscribed(user_id)

    broker = RedisBroker(
        own_redis.url,
        client,
        BrokerSetup("ws", f"test-{user}", on_message, hub.user_ids, 1.0, on_resubscribed),
    )
    broker.start()
    try:
        await eventually(lambda: _now(broker.ready), what="the broker")
        yield Worker(hub, reader, broker, received, resubscribed)
    finally:
        reader.gate.set()
        await broker.stop()
        await gap.stop()
        await client.aclose()


async def _now(value: object) -> object:
    return value


async def _lose_pubsub(
    worker: Worker, own_redis: RedisServer, publisher: Publisher, user: str, gap: str
) -> None:
    """Kill the worker's pub/sub connection and publish ``gap`` before it can be back, then wait
    until its channel is confirmed again."""
    outages = len(worker.resubscribed)
    killer = own_redis.client()
    # Without yielding to the loop: the worker cannot subscribe again before the publish.
    killer.client_kill_filter(_type="pubsub")
    publisher.publish(user, gap)
    killer.close()
    await eventually(lambda: _now(len(worker.resubscribed) > outages), timeout=10, what="resubscribed")


async def _arrived(worker: Worker, count: int) -> None:
    await eventually(lambda: _now(len(worker.received) >= count), timeout=10, what=f"{count} arrived")


async def test_a_second_outage_during_the_first_gap_read_loses_nothing(
    worker: Worker, own_redis: RedisServer, user: str
) -> None:
    """Outage 1 (m4 missed), its read in flight; m5 live; outage 2 (m6 missed); m7 live; then
    the first read comes back: every socket gets m1 to m8 in order, once, and no recovered:false."""
    raw, env = Socket(envelope=False), Socket(envelope=True)
    worker.hub.add(user, raw)
    worker.hub.add(user, env)
    await worker.broker.subscribe(user)
    publisher = Publisher(own_redis.url)
    try:
        for n in range(1, 4):
            publisher.publish(user, f"m{n}")
        await _arrived(worker, 3)
        await _lose_pubsub(worker, own_redis, publisher, user, "m4")
        await eventually(lambda: _now(worker.reader.reads == 1), what="the first gap's read")
        publisher.publish(user, "m5")
        await _arrived(worker, 4)
        await _lose_pubsub(worker, own_redis, publisher, user, "m6")
        publisher.publish(user, "m7")
        await _arrived(worker, 5)
        worker.reader.gate.set()
        publisher.publish(user, "m8")
        await eventually(lambda: _now(raw.data()[-1:] == ["m8"]), timeout=10, what="m8")
        await eventually(lambda: _now(env.data()[-1:] == ["m8"]), timeout=10, what="m8")
        expected = [f"m{n}" for n in range(1, 9)]
        assert raw.data() == expected
        assert env.data() == expected
        assert env.recoveries() == []
    finally:
        publisher.close()


def _gap_fills(result: str) -> float:
    return REGISTRY.get_sample_value("websocket_gap_fills_total", {"result": result}) or 0.0


async def test_more_held_than_the_cap_gives_the_gap_up_loudly(
    worker: Worker, own_redis: RedisServer, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While the gap's read is in flight more than the cap arrives: envelope sockets get
    recovered:false (overflow), every socket gets what was held and what follows at once, in
    order, and the late read delivers nothing."""
    raw, env = Socket(envelope=False), Socket(envelope=True)
    worker.hub.add(user, raw)
    worker.hub.add(user, env)
    await worker.broker.subscribe(user)
    publisher = Publisher(own_redis.url)
    before = _gap_fills("overflow")
    try:
        publisher.publish(user, "first")
        await _arrived(worker, 1)
        with caplog.at_level(logging.WARNING, logger="gateway.hub"):
            await _lose_pubsub(worker, own_redis, publisher, user, "missed")
            await eventually(lambda: _now(worker.reader.reads == 1), what="the gap's read")
            live = [f"live{n}" for n in range(_HELD_CAP + 5)]
            publisher.publish_many([(user, data) for data in live])
            await _arrived(worker, 1 + len(live))
        assert raw.data() == ["first", *live]
        assert env.data() == ["first", *live]
        # Told before anything that came after the lost gap.
        assert json.loads(env.frames[1]) == {
            "type": "recovery",
            "recovered": False,
            "replayed": 0,
            "reason": "overflow",
        }
        assert _gap_fills("overflow") - before == 1
        assert any("gap fill given up" in r.getMessage() for r in caplog.records)
        worker.reader.gate.set()
        await eventually(lambda: _now(worker.reader.returned == 1), what="the late read")
        publisher.publish(user, "after")
        await eventually(lambda: _now(raw.data()[-1:] == ["after"]), timeout=10, what="after")
        assert raw.data() == ["first", *live, "after"]
        assert env.data() == ["first", *live, "after"]
        assert len(env.recoveries()) == 1
    finally:
        publisher.close()


async def test_a_user_reconfirmed_before_its_read_began_is_read_once(
    worker: Worker, own_redis: RedisServer, user: str
) -> None:
    """Two confirmations of the same user before the fill runs: one read, one delivery each."""
    socket = Socket(envelope=False)
    worker.hub.add(user, socket)
    await worker.broker.subscribe(user)
    worker.reader.gate.set()
    publisher = Publisher(own_redis.url)
    try:
        publisher.publish(user, "m1")
        await _arrived(worker, 1)
        await _lose_pubsub(worker, own_redis, publisher, user, "m2")
        publisher.publish(user, "m3")
        await eventually(lambda: _now(socket.data()[-1:] == ["m3"]), timeout=10, what="m3")
        gaps_read = worker.reader.gaps_read
        gap = GapFiller(worker.hub, worker.reader)
        try:
            gap.resubscribed(user)
            gap.resubscribed(user)
            await eventually(lambda: _now(worker.reader.gaps_read > gaps_read), what="the read")
            publisher.publish(user, "m4")
            await eventually(lambda: _now(socket.data()[-1:] == ["m4"]), timeout=10, what="m4")
        finally:
            await gap.stop()
        assert worker.reader.gaps_read == gaps_read + 1
        assert socket.data() == ["m1", "m2", "m3", "m4"]
    finally:
        publisher.close()
