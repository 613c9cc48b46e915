"""Liveness, Redis reachability and this worker's WebSocket state. Never exception text."""

from __future__ import annotations

import asyncio
import os

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.broker.cluster import ClusterBroker
from gateway.state import Gateway

_REDIS_PING_TIMEOUT = 1.0


async def liveness(request: Request) -> Response:
    """200 while serving; 503 once draining, so a load balancer stops sending new clients."""
    gateway: Gateway = request.state.gateway
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def redis(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    if isinstance(gateway.broker, ClusterBroker):
        return cluster_status(gateway.broker)
    try:
        await asyncio.wait_for(gateway.redis.ping(), _REDIS_PING_TIMEOUT)
    except (RedisError, OSError, TimeoutError):
        return JSONResponse({"redis": "unavailable"}, status_code=503)
    if not gateway.broker.ready:
        return JSONResponse({"redis": "reconnecting"}, status_code=503)
    return JSONResponse({"redis": "ok"})


def cluster_status(broker: ClusterBroker) -> Response:
    """Redis Cluster: every master of the slot map, by number, address and slots, with the state
    of this worker's pub/sub connection to it ("none": no local user there, so no connection).
    503 when the slot map cannot be read, or a master holding a local user's channel is
    unreachable (those users hear nothing); a master with no local user does not count here."""
    shards = [
        {
            "shard": state.index,
            "node": state.node,
            "slots": state.slots,
            "channels": state.channels,
            "pubsub": state.pubsub,
        }
        for state in broker.shard_states()
    ]
    if not broker.map_ok:
        return JSONResponse({"redis": "unavailable", "shards": shards}, status_code=503)
    down = [shard["node"] for shard in shards if shard["pubsub"] == "reconnecting"]
    if down:
        return JSONResponse({"redis": "reconnecting", "unreachable": down, "shards": shards}, status_code=503)
    return JSONResponse({"redis": "ok", "shards": shards})


async def websocket(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    return JSONResponse(
        {
            "worker": gateway.worker_id,
            "pid": os.getpid(),
            "connections": gateway.hub.connection_count,
            "users": gateway.hub.user_count,
            "subscriptions": gateway.broker.channel_count,
            "leases": len(gateway.limiter.leases),
            "handshakes": gateway.pending_handshakes,
            "subscriber_ready": gateway.broker.ready,
            "draining": gateway.draining,
            # Tasks beyond the fixed few are per-connection: a leak shows here.
            "tasks": len(asyncio.all_tasks()),
        }
    )
