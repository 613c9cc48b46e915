"""A failover to a replica that lacked the master's last history entries (replication is
asynchronous), on a real master and replica: the offsets the old master gave out are given again
by the new one, to other messages. Neither a worker that delivered the lost entries nor a client
that resumes from one of them may take the new messages for ones it has.

The gateway reaches Redis through a fault proxy that the failover points at the promoted replica
(pub/sub and commands at once, as Sentinel moves them); publishers reach each server directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.publishing.publisher import Publisher
from harness.fault_proxy import Fault, FaultProxy
from harness.gateway_process import Gateway, running_gateway
from harness.redis_replica import ReplicatedPair, replicated_pair
from harness.tokens import make_token
from harness.waiting import eventually, in_thread


@pytest.fixture
def pair() -> Iterator[ReplicatedPair]:
    with replicated_pair() as pair:
        yield pair


@pytest.fixture
def proxy(pair: ReplicatedPair) -> Iterator[FaultProxy]:
    with FaultProxy(pair.master.port) as proxy:
        yield proxy


@pytest.fixture
def gateway(proxy: FaultProxy) -> Iterator[Gateway]:
    with running_gateway(proxy.url, workers=1) as gateway:
        yield gateway


async def _envelope_socket(gateway: Gateway, user: str) -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}&envelope=1")


async def _frames(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(decode=True), 15)) for _ in range(count)]


async def _until(ws: ClientConnection, data: str) -> list[dict[str, Any]]:
    """The frames up to and including the message whose data is ``data``."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1].get("data") != data:
        frames += await _frames(ws, 1)
    return frames


def _data(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["data"] for frame in frames if frame["type"] == "message"]


async def _lose_m4_m5(pair: ReplicatedPair, ws: ClientConnection, user: str) -> list[dict[str, Any]]:
    """m1-m3 reach the replica, m4 and m5 only the master; the socket receives all five."""
    with closing(Publisher(pair.master.url)) as publisher:
        for n in range(1, 4):
            publisher.publish(user, f"m{n}")
        pair.settle()
        pair.cut_replication()
        for n in (4, 5):
            publisher.publish(user, f"m{n}")
    frames = await _frames(ws, 5)
    assert _data(frames) == ["m1", "m2", "m3", "m4", "m5"]
    return frames


def _promote_and_publish(pair: ReplicatedPair, user: str, numbers: range) -> None:
    pair.promote()
    with closing(Publisher(pair.replica.url)) as publisher:
        for n in numbers:
            publisher.publish(user, f"n{n}")


async def _move_gateway(pair: ReplicatedPair, proxy: FaultProxy, gateway: Gateway) -> None:
    """Every connection of the gateway now reaches the promoted replica."""
    proxy.upstream = ("127.0.0.1", pair.replica.port)
    proxy.inject(Fault.RESET, 1)
    await eventually(
        in_thread(lambda: gateway.get("/healthz/redis", timeout=2)[0] == 200),
        timeout=15,
        what="the gateway to reach the promoted replica",
    )


async def _subscribed(pair: ReplicatedPair, user: str) -> None:
    channel = f"ws:{user}".encode()
    with pair.replica.client() as replica:
        await eventually(
            in_thread(lambda: dict(replica.pubsub_numsub(channel))[channel] == 1),
            timeout=15,
            what="the worker to subscribe on the promoted replica",
        )


def _epoch(pair: ReplicatedPair, user: str) -> str:
    with pair.replica.client() as client:
        return str(client.hget(f"{{ws:{user}}}:meta", "epoch").decode())


async def test_a_worker_that_delivered_the_lost_entries_delivers_the_messages_that_take_their_offsets(
    pair: ReplicatedPair, proxy: FaultProxy, gateway: Gateway, user: str
) -> None:
    """n4-n6 are published on the promoted replica before the worker reaches it: the gap fill
    delivers them (no recovered:false: nothing is missing), then what follows."""
    ws = await _envelope_socket(gateway, user)
    await _lose_m4_m5(pair, ws, user)
    _promote_and_publish(pair, user, range(4, 7))
    await _move_gateway(pair, proxy, gateway)
    await _subscribed(pair, user)
    with closing(Publisher(pair.replica.url)) as publisher:
        publisher.publish(user, "n7")
    epoch = _epoch(pair, user)
    assert await _until(ws, "n7") == [
        {"type": "message", "position": f"{n}-{epoch}", "data": f"n{n}"} for n in range(4, 8)
    ]
    await ws.close()


async def test_a_resume_from_a_lost_entry_replays_the_messages_that_take_its_offset(
    pair: ReplicatedPair, proxy: FaultProxy, gateway: Gateway, user: str
) -> None:
    """A client that received m5 from the old master resumes from it once the replica holds
    n4-n6: all three are replayed, none skipped for an offset the client saw."""
    ws = await _envelope_socket(gateway, user)
    last = (await _lose_m4_m5(pair, ws, user))[-1]["position"]
    await ws.close()
    _promote_and_publish(pair, user, range(4, 7))
    await _move_gateway(pair, proxy, gateway)
    resumed = await connect(f"{gateway.ws_url}?token={make_token(user)}&since={last}", open_timeout=15)
    (recovery,) = await _frames(resumed, 1)
    assert recovery == {"type": "recovery", "recovered": True, "replayed": 3}
    assert _data(await _frames(resumed, 3)) == ["n4", "n5", "n6"]
    await resumed.close()
