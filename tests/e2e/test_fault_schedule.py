"""A workload through a random sequence of Redis faults, then the promises are checked.

The gateway (two workers) reaches Redis only through the fault proxy; the publisher reaches Redis
directly, as a backend on a healthy path would. Envelope clients resume with ``since`` whenever
they are closed, like the JS client. While the faults run, clients also close and reopen on their
own (admissions and releases under faults). Afterwards:
- no message with history is lost (unless the client was told ``recovered:false``) or duplicated,
  and each client sees its messages in publish order;
- no client is refused 4029 (each user opens one socket, under a limit of two);
- no place is leaked: once the faults end every user holds exactly its one live place, and none
  after its client closes;
- a SIGTERM drains every client with 1012.

``FAULT_SEED`` replays a schedule; ``FAULT_SCHEDULE_SECONDS`` makes it longer. The seed is printed on failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.publishing.publisher import AsyncPublisher
from harness.fault_proxy import Fault, FaultProxy
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer, live_leases
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

USERS = 6
LIMIT = 2
LEASE_TTL = 6.0
SCHEDULE_SECONDS = float(os.environ.get("FAULT_SCHEDULE_SECONDS", "25"))
SEED = int(os.environ.get("FAULT_SEED", str(random.SystemRandom().randrange(1 << 32))))


@dataclass
class Client:
    """One envelope client of one user; a reconnecting follower that records what it saw."""

    user: str
    events: list[tuple[str, Any]] = field(default_factory=list)
    position: str | None = None
    closes: list[int] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)
    open: bool = False
    churn: asyncio.Event = field(default_factory=asyncio.Event)

    def seqs(self) -> list[int]:
        return [seq for kind, seq in self.events if kind == "seq"]

    async def follow(self, gateway: Gateway, stop: asyncio.Event, rng: random.Random) -> None:
        while not stop.is_set():
            query = "&envelope=1" if self.position is None else f"&since={self.position}"
            try:
                ws = await connect(f"{gateway.ws_url}?token={make_token(self.user)}{query}", open_timeout=10)
            except (TimeoutError, InvalidStatus, OSError) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", 0)
                self.refusals.append(int(status))
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                continue
            self.open = True
            code = await self._read(ws, stop)
            self.open = False
            self.closes.append(code)
            if code == 1012:
                return  # drained: the test is over
            await asyncio.sleep(rng.uniform(0.05, 0.3))

    async def _read(self, ws: Any, stop: asyncio.Event) -> int:
        churn = asyncio.create_task(self.churn.wait())
        try:
            while True:
                receive = asyncio.create_task(ws.recv())
                await asyncio.wait({receive, churn}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    # Closing on our own, as a user leaving a page would.
                    receive.cancel()
                    self.churn.clear()
                    await ws.close()
                    return 1000
                frame = json.loads(receive.result())
                if frame["type"] == "recovery":
                    self.events.append(("recovery", frame["recovered"]))
                elif frame["type"] == "message":
                    self.events.append(("seq", frame["data"]["seq"]))
                    self.position = frame["position"]
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else 1006
        finally:
            churn.cancel()


def check_sequence(client: Client, published: int) -> list[str]:
    """What broke the promise for this client: a loss, a duplicate, a reordering."""
    problems = []
    last = -1
    told_lost = False
    for kind, value in client.events:
        if kind == "recovery":
            told_lost = told_lost or value is False
            continue
        if value <= last:
            problems.append(f"{client.user}: seq {value} after {last} (duplicate or out of order)")
        elif value > last + 1 and not told_lost:
            problems.append(f"{client.user}: lost {last + 1}..{value - 1} without recovered:false")
        last = max(last, value)
        told_lost = False
    if last != published - 1:
        problems.append(f"{client.user}: last seq {last}, published {published}")
    return problems


@pytest.fixture
def proxy(own_redis: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(own_redis.port) as p:
        yield p


def next_fault(rng: random.Random) -> tuple[Fault, float, dict[str, float]]:
    fault = rng.choice(list(Fault))
    options: dict[str, float] = {}
    if fault is Fault.LATENCY:
        options["latency"] = rng.uniform(0.02, 0.3)
    if fault is Fault.CUT:
        options["after_bytes"] = rng.randrange(1, 64)
    return fault, rng.uniform(0.3, 3.0), options


async def test_promises_hold_through_a_random_fault_schedule(
    own_redis: RedisServer, proxy: FaultProxy
) -> None:
    rng = random.Random(SEED)
    print(f"FAULT_SEED={SEED}")
    users = [f"faulty-{i}-{SEED}" for i in range(USERS)]
    clients = [Client(user) for user in users]
    stop = asyncio.Event()
    redis = own_redis.client()
    with running_gateway(
        proxy.url,
        workers=2,
        WEBSOCKET_MAX_CONNECTIONS_PER_USER=str(LIMIT),
        WEBSOCKET_LEASE_TTL=str(LEASE_TTL),
        REDIS_PROBE_INTERVAL="0.5",
        WEBSOCKET_DRAIN_WINDOW="2",
    ) as gateway:
        followers = [asyncio.create_task(c.follow(gateway, stop, rng)) for c in clients]
        publisher = AsyncPublisher(own_redis.url)
        published = 0

        async def publish_one() -> None:
            nonlocal published
            await publisher.publish_many([(user, {"seq": published}) for user in users])
            published += 1

        async def every_client_has_a_position() -> bool:
            if not all(c.open for c in clients):
                return False
            await publish_one()
            return all(c.position is not None for c in clients)

        # Warm-up: every client connected and holding a position before the first fault.
        await eventually(every_client_has_a_position, timeout=20, interval=0.2)

        publishing = True

        async def keep_publishing() -> None:
            while publishing:
                await publish_one()
                await asyncio.sleep(0.05)

        stream = asyncio.create_task(keep_publishing())
        loop = asyncio.get_running_loop()
        ends = loop.time() + SCHEDULE_SECONDS
        schedule: list[str] = []
        while loop.time() < ends:
            fault, seconds, options = next_fault(rng)
            schedule.append(f"at seq {published}: {fault.value} {seconds:.2f}s {options}")
            proxy.inject(fault, seconds, **options)  # type: ignore[arg-type]
            if rng.random() < 0.3:
                rng.choice(clients).churn.set()
            await asyncio.sleep(seconds)
            proxy.heal()
            await asyncio.sleep(rng.uniform(0.2, 1.5))
        context = f"seed {SEED}, schedule: {schedule}"

        # Healed: every client back, every message delivered, one place each.
        def one_place_each() -> bool:
            return all(live_leases(redis, u) == 1 for u in users)

        async def settled() -> bool:
            return all(c.open for c in clients) and await asyncio.to_thread(one_place_each)

        await eventually(settled, timeout=LEASE_TTL * 3, what=f"settle ({context})")
        publishing = False
        await stream
        await publish_one()

        async def all_delivered() -> bool:
            return all(c.seqs() and c.seqs()[-1] == published - 1 for c in clients)

        await eventually(all_delivered, timeout=15, what=f"the last message ({context})")
        # Drain: every client is told 1012.
        await asyncio.to_thread(gateway.stop, signal.SIGTERM)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*followers), 20)
        await publisher.aclose()
        # Checked inside the gateway's context, so a failure prints its log.
        problems = [p for c in clients for p in check_sequence(c, published)]
        if problems:
            print(gateway.log())
            print("client 0:", clients[0].events, clients[0].closes)
        assert not problems, f"{context}: {problems[:10]}"
        refused_at_limit = [(c.user, c.closes.count(4029)) for c in clients if 4029 in c.closes]
        assert not refused_at_limit, f"4029 under the limit ({context}): {refused_at_limit}"
        assert all(c.closes[-1] == 1012 for c in clients), [c.closes[-3:] for c in clients]

    def no_places_left() -> bool:
        return all(live_leases(redis, u) == 0 for u in users)

    await eventually(in_thread(no_places_left), timeout=5, what=f"places released ({context})")
