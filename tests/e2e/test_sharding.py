"""Four gunicorn workers: each holds one pub/sub connection, subscribed exactly to its own users."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

WORKERS = 4


@pytest.fixture(scope="module")
def gateway_four(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=WORKERS) as gateway:
        yield gateway


def _subscriber_clients(client: redis.Redis, worker_ids: set[str]) -> dict[str, dict[str, object]]:
    """CLIENT LIST entries of the gateway's pub/sub connections, by worker id."""
    found: dict[str, dict[str, object]] = {}
    for entry in client.client_list():
        name = str(entry.get("name", ""))
        if name.startswith("gateway-sub:") and name.removeprefix("gateway-sub:") in worker_ids:
            found[name.removeprefix("gateway-sub:")] = entry
    return found


async def _open(gateway: Gateway, user: str) -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}")


async def test_each_user_gets_exactly_its_messages_and_workers_subscribe_only_their_users(
    gateway_four: Gateway, redis_server: RedisServer
) -> None:
    """200 users with 1-3 connections: exact delivery, exact subscriptions, prompt unsubscribe."""
    rng = random.Random(2)
    run = uuid.uuid4().hex[:8]
    users = [f"shard-{run}-{i}" for i in range(200)]
    plan = [user for user in users for _ in range(rng.randint(1, 3))]
    limit = asyncio.Semaphore(50)

    async def open_one(user: str) -> tuple[str, ClientConnection]:
        async with limit:
            return user, await _open(gateway_four, user)

    sockets: dict[str, list[ClientConnection]] = defaultdict(list)
    workers_of: dict[str, set[str]] = defaultdict(set)
    for user, ws in await asyncio.gather(*(open_one(u) for u in plan)):
        sockets[user].append(ws)
        workers_of[user].add(ws.response.headers["x-gateway-worker"])

    states = await asyncio.to_thread(gateway_four.worker_states)
    worker_ids = {state["worker"] for state in states.values()}
    assert len(worker_ids) == WORKERS
    assert set().union(*workers_of.values()) <= worker_ids

    # Exactly one pub/sub connection per worker, each subscribed to its users plus its control
    # channel and the broadcast channel (held while the worker has a connection).
    client = redis_server.client()
    subscribers = _subscriber_clients(client, worker_ids)
    assert set(subscribers) == worker_ids
    users_on: dict[str, set[str]] = defaultdict(set)
    for user, ids in workers_of.items():
        for worker_id in ids:
            users_on[worker_id].add(user)
    for worker_id, entry in subscribers.items():
        assert int(str(entry["sub"])) == 2 + len(users_on[worker_id]), worker_id
    numsub = dict(client.pubsub_numsub(*(f"ws:{u}" for u in users)))
    assert {k.decode(): v for k, v in numsub.items()} == {f"ws:{u}": len(workers_of[u]) for u in users}
    channels = {c.decode() for c in client.pubsub_channels(f"ws:shard-{run}-*")}
    assert channels == {f"ws:{u}" for u in users}

    # Three messages to each user, interleaved across users, then an end marker: every socket of
    # a user must read exactly its three in order, and nothing of anybody else's.
    publisher = aioredis.Redis.from_url(redis_server.url)
    messages = [(user, seq) for user in users for seq in range(3)]
    rng.shuffle(messages)
    messages.sort(key=lambda m: m[1])  # keep per-user order: seq 0s, then 1s, then 2s
    async with publisher.pipeline(transaction=False) as pipe:
        for user, seq in messages:
            pipe.publish(f"ws:{user}", json.dumps({"to": user, "seq": seq}))
        for user in users:
            pipe.publish(f"ws:{user}", json.dumps({"to": user, "end": True}))
        await pipe.execute()

    async def read_until_end(ws: ClientConnection) -> list[dict[str, object]]:
        frames = []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame.get("end"):
                frames.append(frame)
                return frames
            frames.append(frame)

    for user, user_sockets in sockets.items():
        for got in await asyncio.gather(*(read_until_end(ws) for ws in user_sockets)):
            assert got == [{"to": user, "seq": s} for s in range(3)] + [{"to": user, "end": True}]

    # Every socket of half the users closes: their channels soon lose all subscribers.
    leaving = users[:100]
    await asyncio.gather(*(ws.close() for user in leaving for ws in sockets[user]))

    def unsubscribed() -> bool:
        counts = dict(client.pubsub_numsub(*(f"ws:{u}" for u in leaving)))
        return all(count == 0 for count in counts.values())

    await eventually(
        in_thread(unsubscribed), timeout=5.0, what="channels of departed users to have no subscribers"
    )
    staying = dict(client.pubsub_numsub(*(f"ws:{u}" for u in users[100:])))
    assert {k.decode(): v for k, v in staying.items()} == {f"ws:{u}": len(workers_of[u]) for u in users[100:]}

    await asyncio.gather(*(ws.close() for user in users[100:] for ws in sockets[user]))
    await publisher.aclose()
    client.close()


async def _settled_tasks(gateway: Gateway) -> dict[int, int]:
    """Each worker's task count once it holds no socket and two readings in a row agree: the
    previous test's closes may still be releasing their places when this one starts."""
    readings: list[dict[int, int]] = []

    def settled() -> bool:
        states = gateway.worker_states()
        if any(state["connections"] or state["users"] for state in states.values()):
            readings.clear()
            return False
        readings.append({pid: state["tasks"] for pid, state in states.items()})
        return len(readings) >= 2 and readings[-1] == readings[-2]

    await eventually(in_thread(settled), timeout=10, interval=0.2, what="every worker to settle, idle")
    return readings[-1]


async def test_churn_leaves_no_subscription_task_or_connection_behind(
    gateway_four: Gateway, redis_server: RedisServer
) -> None:
    """2,000 connects and disconnects in random order: afterwards every worker is back to idle."""
    baseline = await _settled_tasks(gateway_four)
    rng = random.Random(3)
    run = uuid.uuid4().hex[:8]
    users = [f"churn-{run}-{i}" for i in range(150)]
    open_sockets: list[ClientConnection] = []
    opened = 0

    async def step() -> None:
        nonlocal opened
        if opened < 2000 and (not open_sockets or rng.random() < 0.55):
            opened += 1
            open_sockets.append(await _open(gateway_four, rng.choice(users)))
        else:
            ws = open_sockets.pop(rng.randrange(len(open_sockets)))
            await ws.close()

    while opened < 2000:
        await asyncio.gather(*(step() for _ in range(20)))
    await asyncio.gather(*(ws.close() for ws in open_sockets))

    client = redis_server.client()

    def idle() -> bool:
        if client.pubsub_channels(f"ws:churn-{run}-*"):
            return False
        states = gateway_four.worker_states()
        return all(
            s["connections"] == 0
            and s["users"] == 0
            and s["subscriptions"] == 0
            and s["tasks"] == baseline[pid]
            for pid, s in states.items()
        )

    await eventually(in_thread(idle), timeout=10, interval=0.1, what="every worker to be idle after churn")
    client.close()
