"""The Starlette application factory; the lifespan creates and wires every resource."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import health, keys, metrics
from gateway.auth import Authenticator
from gateway.broker import LocalUsers, MessageHandler, Resubscribed
from gateway.broker.redis import RedisBroker
from gateway.endpoint import WebSocketEndpoint
from gateway.history.gap import GapFiller
from gateway.history.reader import HistoryReader
from gateway.hub import Hub
from gateway.limiter import Limiter
from gateway.sentinel_mode import SentinelRedis
from gateway.settings import Settings
from gateway.state import Gateway
from gateway.tasks import cancel_and_wait

_COMMAND_CONNECTIONS = 16


def _retry_once_on_a_fresh_connection() -> Retry:
    """After a Redis restart every idle pooled connection is stale, and without this each one
    would fail one command (a refused admission) before being replaced. Every command the
    gateway sends is safe to repeat: the lease scripts are idempotent per connection id, and a
    repeated probe is harmless. Timeouts are not repeated: Redis is slow, not gone."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _client_options(worker_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Connection options of the command client (bounded: an admission storm queues for a
    connection instead of opening hundreds) and of the probe's client, in every mode."""
    common = {"socket_connect_timeout": 2, "socket_timeout": 5, "retry": _retry_once_on_a_fresh_connection()}
    command = {
        **common,
        "max_connections": _COMMAND_CONNECTIONS,
        "timeout": 5,
        "client_name": f"gateway:{worker_id}",
    }
    return command, {**common, "client_name": f"gateway-probe:{worker_id}"}


class SingleRedis:
    """One Redis (``REDIS_URL``): a worker's command client, probe client and pub/sub broker.
    ``SentinelRedis`` (gateway/sentinel_mode.py) has the same shape."""

    def __init__(
        self, url: str, worker_id: str, command_options: dict[str, Any], probe_options: dict[str, Any]
    ):
        self._url = url
        self._worker_id = worker_id
        self.client = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(url, **command_options)
        )
        # The probe has a connection of its own: queued behind an admission storm for a pooled
        # one, it would come back late and tear down a healthy pub/sub connection.
        self.probe_client = aioredis.Redis.from_url(url, single_connection_client=True, **probe_options)

    def broker(
        self,
        prefix: str,
        on_message: MessageHandler,
        users: LocalUsers,
        probe_interval: float,
        on_resubscribed: Resubscribed,
    ) -> RedisBroker:
        return RedisBroker(
            self._url,
            prefix,
            self._worker_id,
            self.probe_client,
            on_message,
            users,
            probe_interval,
            on_resubscribed=on_resubscribed,
        )

    def start(self) -> None:
        pass

    async def aclose(self) -> None:
        await self.probe_client.aclose()
        await self.client.aclose()


def _redis_parts(settings: Settings, worker_id: str) -> SingleRedis | SentinelRedis:
    """The worker's Redis clients and broker for the topology the settings name."""
    command_options, probe_options = _client_options(worker_id)
    if settings.topology.mode == "sentinel":
        return SentinelRedis(settings.topology, worker_id, command_options, probe_options)
    return SingleRedis(settings.redis_url, worker_id, command_options, probe_options)


async def _flush_tally_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        metrics.flush_tally()


_F = TypeVar("_F", bound=Callable[..., Any])


def _mark_coroutine_function(function: _F) -> _F:
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None:
        return cast(_F, mark(function))
    function._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return function


class GatewayApp:
    """The ASGI app: sockets on /ws go straight to their endpoint, the rest through Starlette.

    Every open socket holds its ASGI call stack for its whole life; skipping Starlette's
    middleware and router for sockets keeps those frames out of the per-connection cost.
    """

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self._websocket = WebSocketEndpoint()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: the server awaits the endpoint's own, so no frame of ours is kept.
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            return self._websocket(scope, receive, send)
        return self.starlette(scope, receive, send)

    # Servers tell an ASGI 3 app by a coroutine function; this one returns the awaitable.
    __call__ = _mark_coroutine_function(__call__)


def create_app(settings: Settings) -> GatewayApp:
    """Build the app with the process's settings (gunicorn.conf.py reads them, GatewayWorker
    passes them in); resources are created only when its lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Gateway]]:
        # Under gunicorn the master sets the instance id, so it can name a dead worker's leases.
        instance = os.environ.get("GATEWAY_INSTANCE_ID") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        worker_id = keys.worker_id(instance, os.getpid())
        redis_parts = _redis_parts(settings, worker_id)
        client = redis_parts.client
        hub = Hub(settings.max_payload_size)
        reader = HistoryReader(client, settings.channel_prefix, settings.history_replay_cap)
        gap_filler = GapFiller(hub, reader)
        broker = redis_parts.broker(
            settings.channel_prefix,
            hub.deliver,
            hub.user_ids,
            settings.redis_probe_interval,
            gap_filler.resubscribed,
        )
        limiter = Limiter(
            client, settings.channel_prefix, worker_id, settings.max_connections_per_user, settings.lease_ttl
        )
        gateway = Gateway(settings, worker_id, client, hub, broker, limiter, Authenticator(settings), reader)
        gateway.sentinel = redis_parts if isinstance(redis_parts, SentinelRedis) else None
        app.state.gateway = gateway  # for the worker's drain on shutdown
        broker.start()
        redis_parts.start()
        limiter.start()
        tally = asyncio.create_task(_flush_tally_every(0.5), name="gateway-metrics-tally")
        try:
            yield {"gateway": gateway}
        finally:
            gateway.draining = True
            await cancel_and_wait(tally)
            metrics.flush_tally()
            await limiter.stop()
            await broker.stop()
            await gap_filler.stop()
            await redis_parts.aclose()

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    routes = [
        Route("/healthz", health.liveness),
        Route("/healthz/redis", health.redis),
        Route("/healthz/websocket", health.websocket),
        Route("/metrics", metrics_endpoint),
    ]
    return GatewayApp(Starlette(routes=routes, lifespan=lifespan))
