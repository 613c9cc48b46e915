"""The HTTP API on a real Redis Cluster (3 masters): publish, a batch across slots, idempotency,
disconnect and online, each call's scripts routed to the masters owning its users' slots."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway import keys
from harness.api_client import API_KEY, post
from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.redis_cluster import RedisCluster, running_cluster
from harness.tokens import make_token
from harness.waiting import eventually


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with running_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def api(cluster: RedisCluster) -> Iterator[Gateway]:
    with running_gateway(
        "redis://", workers=1, REDIS_CLUSTER_NODES=cluster.startup_nodes, WEBSOCKET_API_KEYS=API_KEY
    ) as gateway:
        yield gateway


def users_on_every_master(cluster: RedisCluster, each: int) -> list[str]:
    """``each`` fresh users on every master, interleaved."""
    by_master: dict[int, list[str]] = {}
    while not by_master or min(len(u) for u in by_master.values()) < each or len(by_master) < 3:
        user = f"c-{uuid.uuid4().hex[:10]}"
        by_master.setdefault(cluster.master_of(keys.user_channel("ws", user)).port, []).append(user)
    return [user for group in zip(*(u[:each] for u in by_master.values()), strict=True) for user in group]


async def envelope(gateway: Gateway, user: str) -> ClientConnection:
    return await connect(f"{gateway.ws_url}?token={make_token(user)}&envelope=1", open_timeout=10)


async def test_a_batch_across_every_master_answers_in_order_and_reaches_each_user(
    api: Gateway, cluster: RedisCluster
) -> None:
    users = users_on_every_master(cluster, 3)
    sockets = [await envelope(api, user) for user in users]
    messages = [{"user": user, "data": {"n": n}} for n, user in enumerate(users)]
    messages.insert(4, {"user": "bad user", "data": 0})
    answer = await post(api, "/api/publish/batch", {"messages": messages})
    assert answer.status == 200, answer.body
    results = answer.json()["results"]
    assert results[4] == {"error": "invalid_user"}
    del results[4]
    for n, (ws, result) in enumerate(zip(sockets, results, strict=True)):
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame == {"type": "message", "position": result["position"], "data": {"n": n}}
        assert result["receivers"] == 1
        await ws.close()


async def test_publish_with_and_without_history_and_an_idempotency_key(
    api: Gateway, cluster: RedisCluster
) -> None:
    for user in users_on_every_master(cluster, 1):
        async with await envelope(api, user) as ws:
            body = {"user": user, "data": "once", "idempotency_key": "k"}
            first = (await post(api, "/api/publish", body)).json()
            assert (await post(api, "/api/publish", body)).json() == {**first, "repeated": True}
            plain = (
                await post(api, "/api/publish", {"user": user, "data": "plain", "history": False})
            ).json()
            assert plain == {"receivers": 1, "position": None}
            frames = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        assert frames == [
            {"type": "message", "position": first["position"], "data": "once"},
            {"type": "message", "data": "plain"},
        ]


async def test_online_and_disconnect_across_masters(api: Gateway, cluster: RedisCluster) -> None:
    users = users_on_every_master(cluster, 1)
    sockets = [await admit(api.ws_url, user) for user in users]
    assert all(isinstance(ws, ClientConnection) for ws in sockets)
    assert (await post(api, "/api/online", {"users": users})).json() == {"online": dict.fromkeys(users, 1)}
    for user, ws in zip(users, sockets, strict=True):
        assert (await post(api, "/api/disconnect", {"user": user})).json() == {"disconnected": 1}
        assert isinstance(ws, ClientConnection)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 4003
    assert (await post(api, "/api/online", {"users": users})).json() == {"online": dict.fromkeys(users, 0)}


async def test_a_batch_follows_slots_that_moved_and_publishes_each_message_once() -> None:
    """The API's client sends nothing again after a connection error, but a MOVED (the node did
    not run the call) is still followed: slots resharded under a gateway that knew the old map,
    every message of a batch is answered and written once, on its new master."""
    with (
        running_cluster(3) as cluster,
        running_gateway(
            "redis://", workers=1, REDIS_CLUSTER_NODES=cluster.startup_nodes, WEBSOCKET_API_KEYS=API_KEY
        ) as gateway,
    ):
        users = users_on_every_master(cluster, 2)
        source = cluster.master_of(keys.user_channel("ws", users[0]))
        target = next(node for node in cluster.nodes if node.port != source.port)
        moving = [u for u in users if cluster.master_of(keys.user_channel("ws", u)).port == source.port]

        async def batch(data: str) -> list[dict[str, object]]:
            answer = await post(
                gateway, "/api/publish/batch", {"messages": [{"user": u, "data": data} for u in users]}
            )
            assert answer.status == 200, answer.body
            return list(answer.json()["results"])

        await batch("before")  # the gateway's client reads the slot map
        await asyncio.to_thread(cluster.reshard, source, target)
        assert all(cluster.master_of(keys.user_channel("ws", u)).port == target.port for u in moving)
        results = await batch("after")
        assert all("position" in result for result in results), results
        with cluster.client() as client:
            assert [client.xlen(keys.history_key("ws", u)) for u in users] == [2] * len(users)


async def test_publishes_to_a_killed_master_s_users_are_answered_503_until_its_replica_serves_them() -> None:
    """The API's client retries nothing, so it is told to read the slot map again after a
    connection error: once the replica is promoted, the killed master's users are published to
    again; meanwhile they are answered 503, never 500, and the other masters' users are served."""
    with (
        running_cluster(3, replicas=1) as cluster,
        running_gateway(
            "redis://", workers=1, REDIS_CLUSTER_NODES=cluster.startup_nodes, WEBSOCKET_API_KEYS=API_KEY
        ) as gateway,
    ):
        users = users_on_every_master(cluster, 1)
        messages = {"messages": [{"user": u, "data": "x"} for u in users]}
        assert (await post(gateway, "/api/publish/batch", messages)).status == 200
        victim = cluster.master_of(keys.user_channel("ws", users[0]))
        await asyncio.to_thread(cluster.kill_master_and_wait_for_failover, victim)

        async def published() -> bool:
            answer = await post(gateway, "/api/publish", {"user": users[0], "data": "y"})
            assert answer.status in (200, 503), answer.body
            return answer.status == 200

        await eventually(published, timeout=15, interval=0.2, what="the killed master's users served again")
        answer = await post(gateway, "/api/publish/batch", messages)
        assert answer.status == 200, answer.body
        assert all("position" in result for result in answer.json()["results"]), answer.body
