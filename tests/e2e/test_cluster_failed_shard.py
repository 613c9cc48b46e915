"""A Redis Cluster master dies and has no replica to take over: only the users whose slots it
served are refused (1013); every other user is admitted on every worker, and a worker's own
bookkeeping (the releases it still owes the dead master, its client's view of the cluster) costs
no one else. (A worker's tag set on the dead master: tests/test_limiter_cluster.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid

from websockets.asyncio.client import ClientConnection

from harness.clients import admit
from harness.gateway_process import Gateway, running_gateway
from harness.redis_cluster import RedisCluster, running_cluster
from harness.redis_server import RedisServer


def _users_on(cluster: RedisCluster, wanted: set[int], count: int, tag: str) -> list[str]:
    """``count`` fresh users whose slots live on a master whose port is in ``wanted``."""
    users: list[str] = []
    while len(users) < count:
        user = f"{tag}-{uuid.uuid4().hex[:10]}"
        if cluster.master_of(f"ws:{user}").port in wanted:
            users.append(user)
    return users


async def _worker_ids(gateway: Gateway) -> list[str]:
    """Every worker's id, read from the accept header of admissions spread over the workers."""
    seen: set[str] = set()
    for _ in range(40):
        ws = await admit(gateway.ws_url, f"warm-{uuid.uuid4().hex[:10]}")
        assert isinstance(ws, ClientConnection)
        seen.add(ws.response.headers["x-gateway-worker"])
        await ws.close()
        if len(seen) == gateway.workers:
            break
    assert len(seen) == gateway.workers, f"admissions reached only {len(seen)} workers"
    return sorted(seen)


async def test_a_dead_master_without_replica_costs_only_its_own_users() -> None:
    with running_cluster(3) as cluster:
        env = {"REDIS_CLUSTER_NODES": cluster.startup_nodes, "REDIS_PROBE_INTERVAL": "1"}
        with running_gateway("redis://", workers=2, **env) as gateway:
            workers = await _worker_ids(gateway)
            # The first master redis-py's cluster client lists (the one it would read its
            # COMMAND table from again); the workers' tag sets may live there too.
            victim: RedisServer = cluster.owner(0)
            healthy = {node.port for node in cluster.nodes} - {victim.port}
            doomed_users = _users_on(cluster, {victim.port}, 8, "doomed")
            others = _users_on(cluster, healthy, 24, "other")
            victim.kill()

            # Their acquires fail on every worker (and leave releases owed to the dead master).
            for user in doomed_users:
                assert await asyncio.wait_for(admit(gateway.ws_url, user), 30) == 1013

            outcomes = [await asyncio.wait_for(admit(gateway.ws_url, user), 30) for user in others]
            refused = [outcome for outcome in outcomes if not isinstance(outcome, ClientConnection)]
            assert refused == [], (
                f"{len(refused)} of {len(others)} users on healthy masters refused: {refused}"
            )
            admitted = [ws for ws in outcomes if isinstance(ws, ClientConnection)]
            assert {ws.response.headers["x-gateway-worker"] for ws in admitted} == set(workers)

            publisher = cluster.client()
            try:
                for user in others:
                    publisher.spublish(f"ws:{user}", json.dumps({"to": user}))
                for user, ws in zip(others, admitted, strict=True):
                    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"to": user}
            finally:
                publisher.close()
            await asyncio.gather(*(ws.close() for ws in admitted))
