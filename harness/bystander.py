"""The invariant every hostile test checks: an attack on a worker costs nobody else anything.

A bystander is an ordinary user with one socket on the attacked worker. While the attack runs, a
publisher sends it a numbered message every ``interval`` through Redis, and the worker's resident
memory is sampled. When the block ends (and at every ``check()`` in between) the bystander must
have received every message, in order; at the end, the median publish-to-receive time must be
within twice the one measured before the attack, plus a small floor for the noise of a shared
machine, and the worker's RSS must not have grown by more than ``rss_growth_kib``::

    async with watching_bystander(gateway, redis_url) as bystander:
        await attack()
        await bystander.check()  # optional: nothing lost so far
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from harness.gateway_process import Gateway
from harness.stalled_client import worker_rss_kib
from harness.tokens import make_token

# Latency may double; below this much more it is noise of a loaded 2-core machine, not a stall.
LATENCY_FLOOR = 0.020
# An attack run in a thread of this process (Hypothesis, blocking sockets) holds the GIL for the
# default 5 ms switch interval at a time, and the bystander's own loop waits for it: its latency
# then measured this process, not the worker (a 12 ms median, 390 ms peaks on an idle worker).
_SWITCH_INTERVAL = 0.0005
# What an attack may grow the worker by: buffers of sockets it opened and the allocator's slack.
RSS_GROWTH_KIB = 32 * 1024
_BASELINE_SAMPLES = 30
_DELIVERY_TIMEOUT = 5.0


@dataclass
class Bystander:
    """What the bystander saw; built by ``watching_bystander``."""

    user: str
    worker_pid: int
    baseline: float  # median publish-to-receive time before the attack, in seconds
    rss_before_kib: int
    rss_peak_kib: int = 0
    latencies: list[float] = field(default_factory=list)
    sent: dict[int, float] = field(default_factory=dict)  # sequence number -> publish time
    received: list[int] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.AbstractEventLoop | None = None

    async def check(self) -> None:
        """Every message published so far has arrived, in order, and the worker is alive."""
        last = max(self.sent, default=-1)
        deadline = time.monotonic() + _DELIVERY_TIMEOUT
        while (self.received[-1] if self.received else -1) < last:
            self._raise_failures()
            assert time.monotonic() < deadline, (
                f"bystander {self.user}: message {last} not received after {_DELIVERY_TIMEOUT} s"
                f" (last received: {self.received[-1:]})"
            )
            await asyncio.sleep(0.01)
        assert self.received == sorted(self.sent)[: len(self.received)], "lost or reordered messages"
        self.rss_peak_kib = max(self.rss_peak_kib, worker_rss_kib(self.worker_pid))

    def check_from_thread(self) -> None:
        """``check()`` for an attack that runs in another thread (blocking sockets, Hypothesis)."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.check(), self._loop).result()

    def _raise_failures(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"bystander {self.user}: {task.exception()!r}")

    def assert_unharmed(self, rss_growth_kib: int = RSS_GROWTH_KIB) -> None:
        """The invariant, once the attack is over (``watching_bystander`` calls it on exit)."""
        assert self.received == sorted(self.sent), (
            f"bystander {self.user} lost messages: {sorted(set(self.sent) - set(self.received))[:10]}"
        )
        if self.latencies:
            during = statistics.median(self.latencies)
            assert during <= 2 * self.baseline + LATENCY_FLOOR, (
                f"bystander latency {during * 1000:.1f} ms, baseline {self.baseline * 1000:.1f} ms"
            )
        growth = self.rss_peak_kib - self.rss_before_kib
        assert growth <= rss_growth_kib, f"worker RSS grew by {growth} KiB (bound {rss_growth_kib} KiB)"


async def _round_trip(redis: aioredis.Redis, ws: ClientConnection, channel: str) -> float:
    sent = time.monotonic()
    assert await redis.publish(channel, b'{"baseline":1}') == 1
    assert json.loads(await asyncio.wait_for(ws.recv(), _DELIVERY_TIMEOUT)) == {"baseline": 1}
    return time.monotonic() - sent


def _worker_pid(ws: ClientConnection) -> int:
    """The pid in the accept's x-gateway-worker (``<instance>-<pid>``, gateway/keys.py)."""
    assert ws.response is not None
    return int(ws.response.headers["x-gateway-worker"].rsplit("-", 1)[1])


async def _receive(ws: ClientConnection, bystander: Bystander) -> None:
    async for frame in ws:
        number = json.loads(frame)["bystander"]
        bystander.latencies.append(time.monotonic() - bystander.sent[number])
        bystander.received.append(number)


async def _publish(redis: aioredis.Redis, channel: str, bystander: Bystander, interval: float) -> None:
    number = 0
    while not bystander._stop.is_set():
        # Recorded before the publish: the frame may arrive before the publish returns.
        bystander.sent[number] = time.monotonic()
        receivers = await redis.publish(channel, json.dumps({"bystander": number}))
        assert receivers == 1, f"message {number} reached {receivers} subscribers"
        number += 1
        bystander.rss_peak_kib = max(bystander.rss_peak_kib, worker_rss_kib(bystander.worker_pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bystander._stop.wait(), interval)


@contextlib.asynccontextmanager
async def watching_bystander(
    gateway: Gateway,
    redis_url: str,
    *,
    interval: float = 0.02,
    rss_growth_kib: int = RSS_GROWTH_KIB,
    prefix: str = "ws",
) -> AsyncIterator[Bystander]:
    """A bystander on one of ``gateway``'s workers (the only one, with ``workers=1``), watched for
    the length of the block; on a clean exit, ``Bystander.assert_unharmed``."""
    user = f"bystander-{uuid.uuid4().hex[:8]}"
    channel = f"{prefix}:{user}"
    redis = aioredis.Redis.from_url(redis_url)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL)
    try:
        # No client pings: websockets draws their payloads from the random module, which Hypothesis,
        # running an attack in another thread, takes for a strategy using it.
        async with connect(f"{gateway.ws_url}?token={make_token(user)}", ping_interval=None) as ws:
            pid = _worker_pid(ws)
            samples = [await _round_trip(redis, ws, channel) for _ in range(_BASELINE_SAMPLES)]
            rss = worker_rss_kib(pid)
            bystander = Bystander(user, pid, statistics.median(samples), rss, rss)
            bystander._loop = asyncio.get_running_loop()
            bystander._tasks = [
                asyncio.create_task(_receive(ws, bystander)),
                asyncio.create_task(_publish(redis, channel, bystander, interval)),
            ]
            try:
                yield bystander
                bystander._stop.set()
                await asyncio.wait_for(asyncio.shield(bystander._tasks[1]), _DELIVERY_TIMEOUT)
                await bystander.check()
            finally:
                for task in bystander._tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            bystander.assert_unharmed(rss_growth_kib)
    finally:
        sys.setswitchinterval(switch_interval)
        await redis.aclose()


async def assert_still_served(gateway: Gateway, redis_url: str, ws: ClientConnection, user: str) -> None:
    """After an attack: the worker answers /healthz and a message to ``user`` reaches ``ws``."""
    assert gateway.get("/healthz")[0] == 200
    async with aioredis.Redis.from_url(redis_url) as client:
        assert await client.publish(f"ws:{user}", b'{"still":"here"}') == 1
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"still": "here"}
