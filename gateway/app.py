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

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import dev_console, health, keys
from gateway.admission.auth import Authenticator
from gateway.api.routes import HttpApi, is_api_path
from gateway.broker import BrokerSetup
from gateway.config.settings import Settings
from gateway.endpoint import WebSocketEndpoint
from gateway.history.gap import GapFiller
from gateway.history.reader import HistoryReader
from gateway.hub import Hub
from gateway.leases.limiter import Limiter
from gateway.ports import PortMap, not_found
from gateway.redis_wiring import build_redis
from gateway.state import Gateway
from gateway.tasks import cancel_and_wait
from gateway.telemetry import metrics


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

    def __init__(
        self, starlette: Starlette, ports: PortMap | None = None, api: HttpApi | None = None
    ) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self._websocket = WebSocketEndpoint()
        # The HTTP API, once WEBSOCKET_API_KEYS is set; without it /api/* is Starlette's 404.
        self._api = api
        # Only where a port of its own takes paths away from WEBSOCKET_PORT (gateway/ports.py).
        self._ports = ports if ports is not None and ports.side else None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: the server awaits the endpoint's own, so no frame of ours is kept.
        if self._ports is not None and scope["type"] != "lifespan" and self._ports.misrouted(scope):
            return not_found(scope, receive, send)
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            return self._websocket(scope, receive, send)
        if self._api is not None and scope["type"] == "http" and is_api_path(scope["path"]):
            return self._api(scope, receive, send)
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
        # One Redis or a Cluster: gateway/redis_wiring.py knows the difference.
        parts = build_redis(settings, worker_id)
        client = parts.client
        hub = Hub(settings.max_payload_size, settings.send_queue_size)
        reader = HistoryReader(client, settings.channel_prefix, settings.history_replay_cap)
        gap_filler = GapFiller(hub, reader)
        broker = parts.broker(
            BrokerSetup(
                settings.channel_prefix,
                worker_id,
                hub.deliver,
                hub.user_ids,
                settings.redis_probe_interval,
                gap_filler.resubscribed,
            )
        )
        limiter = Limiter(
            client,
            settings.channel_prefix,
            worker_id,
            settings.max_connections_per_user,
            settings.lease_ttl,
            background=parts.background,
        )
        gateway = Gateway(
            settings,
            worker_id,
            client,
            hub,
            broker,
            limiter,
            Authenticator(settings),
            reader,
            api_redis=parts.api,
        )
        app.state.gateway = gateway  # for the worker's drain on shutdown
        if settings.dev_console:
            dev_console.warn(settings.dev_console_port)
        metrics.show_known_label_values()
        broker.start()
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
            await parts.aclose()

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    routes = [
        Route("/healthz", health.liveness),
        Route("/healthz/redis", health.redis),
        Route("/healthz/websocket", health.websocket),
        Route("/metrics", metrics_endpoint),
    ]
    if settings.dev_console:
        routes += dev_console.routes()
    api = HttpApi(settings) if settings.api_keys else None
    return GatewayApp(Starlette(routes=routes, lifespan=lifespan), PortMap(settings), api)
