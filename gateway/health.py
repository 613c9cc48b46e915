"""Liveness, Redis reachability and this worker's WebSocket state. Never exception text."""

from __future__ import annotations

import asyncio
import os

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.state import Gateway

_REDIS_PING_TIMEOUT = 1.0


async def liveness(request: Request) -> Response:
    """200 while serving; 503 once draining, so a load balancer stops sending new clients."""
    gateway: Gateway = request.state.gateway
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def redis(request: Request) -> Response:
    """Commands answered and the pub/sub connection ready, with what the broker adds for its
    topology (``Broker.redis_health``: the master Sentinel names, a Cluster's masters)."""
    gateway: Gateway = request.state.gateway
    report = await gateway.broker.redis_health(_REDIS_PING_TIMEOUT)
    if report.verdict is not None:
        status = 200 if report.verdict == "ok" else 503
        return JSONResponse({"redis": report.verdict, **report.fields}, status_code=status)
    try:
        await asyncio.wait_for(gateway.redis.ping(), _REDIS_PING_TIMEOUT)
    except (RedisError, OSError, TimeoutError):
        return JSONResponse({"redis": "unavailable", **report.fields}, status_code=503)
    if not gateway.broker.ready:
        return JSONResponse({"redis": "reconnecting", **report.fields}, status_code=503)
    return JSONResponse({"redis": "ok", **report.fields})


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
