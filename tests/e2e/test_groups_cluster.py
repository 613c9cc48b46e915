"""Groups and broadcast on a real Redis Cluster: group channels are shard channels, held once per
worker however many members; a group's messages reach its members on every worker; a failover of
the group's master closes no socket and delivery goes on."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from gateway import keys
from gateway.publishing.publisher import Publisher
from harness.gateway_process import Gateway, running_gateway
from harness.redis_cluster import RedisCluster, running_cluster
from harness.tokens import make_token
from harness.waiting import eventually


def _env(cluster: RedisCluster) -> dict[str, str]:
    return {"REDIS_CLUSTER_NODES": cluster.startup_nodes, "REDIS_PROBE_INTERVAL": "0.5"}


async def _members_on_every_worker(gateway: Gateway, team: str, workers: int) -> list[ClientConnection]:
    """Members (each its own user) until every worker holds at least one."""
    sockets: list[ClientConnection] = []
    seen: set[str] = set()
    while len(seen) < workers:
        assert len(sockets) < 40, "the listener never spread the members over every worker"
        token = make_token(f"member-{uuid.uuid4().hex[:10]}", groups=[team])
        ws = await connect(f"{gateway.ws_url}?token={token}&envelope=1", open_timeout=10)
        sockets.append(ws)
        seen.add(ws.response.headers["x-gateway-worker"])
    return sockets


async def _next(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


def _shard_subscribers(cluster: RedisCluster, channel: str) -> tuple[int, int]:
    """(SSUBSCRIBE-ers on the channel's master, plain SUBSCRIBE-ers on any node)."""
    with cluster.master_of(channel).client() as client:
        shard = dict(zip(*[iter(client.execute_command("PUBSUB", "SHARDNUMSUB", channel))] * 2, strict=True))
    plain = 0
    for node in cluster.live_nodes():
        with node.client() as client:
            plain += int(dict(client.pubsub_numsub(channel))[channel.encode()])
    return int(shard[channel.encode()]), plain


async def test_group_channels_are_shard_channels_and_reach_members_on_every_worker() -> None:
    team = f"team-{uuid.uuid4().hex[:10]}"
    channel = keys.group_channel("ws", team)
    with running_cluster(3) as cluster, running_gateway("redis://", workers=2, **_env(cluster)) as host:
        members = await _members_on_every_worker(host, team, 2)
        # One shard subscription per worker, whatever the number of members; no plain one.
        assert _shard_subscribers(cluster, channel) == (2, 0)
        with Publisher(cluster_nodes=cluster.startup_nodes) as publisher:
            assert publisher.publish_group(team, {"to": "team"}) == 2
            assert publisher.broadcast({"to": "all"}) == 2
        for ws in members:
            frames = [await _next(ws), await _next(ws)]
            assert [(f["group"], f["data"]) for f in frames] == [(team, {"to": "team"}), ("*", {"to": "all"})]
        await asyncio.gather(*(ws.close() for ws in members))

        async def dropped() -> bool:
            return _shard_subscribers(cluster, channel) == (0, 0)

        await eventually(dropped, what="the group's shard channel dropped after its last member")


async def test_a_failover_of_the_group_s_master_closes_no_socket() -> None:
    """SIGKILL the master owning the group's slot; its replica takes over; members stay connected
    and the group's next messages reach all of them."""
    team = f"team-{uuid.uuid4().hex[:10]}"
    with (
        running_cluster(3, replicas=1) as cluster,
        running_gateway("redis://", workers=2, **_env(cluster)) as host,
    ):
        members = await _members_on_every_worker(host, team, 2)
        victim = cluster.master_of(keys.group_channel("ws", team))
        await asyncio.to_thread(cluster.kill_master_and_wait_for_failover, victim)
        with Publisher(cluster_nodes=cluster.startup_nodes) as publisher:

            async def delivered() -> bool:
                # Until the workers follow the failover, a publish reaches fewer of them.
                return publisher.publish_group(team, {"after": "failover"}) == 2

            await eventually(delivered, timeout=20, interval=0.5, what="the group's channel followed")
        for ws in members:
            frame = await _next(ws)
            while frame.get("type") != "message":
                frame = await _next(ws)
            assert frame["group"] == team and frame["data"] == {"after": "failover"}
            assert ws.state is State.OPEN
        await asyncio.gather(*(ws.close() for ws in members))
