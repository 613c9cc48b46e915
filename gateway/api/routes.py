"""``HttpApi``: the ASGI app behind ``/api/*`` (gateway/app.py sends it every HTTP request under
``/api`` once ``WEBSOCKET_API_KEYS`` is set).

A request passes, in order: the key (401 for anything else, whatever the path), the path (404),
the method (405), the content type (415), the body (413, 408, 400; its size, then its count of
JSON values, before it is parsed), then its handler. Every answer
is JSON; an error is ``{"error": reason}``. Each request is counted by route and status and timed
(``websocket_api_requests_total``, ``websocket_api_request_duration_seconds``); a refusal is
logged as one throttled line with its status and reason, never the key, a user id or the body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.api import bodies, openapi, requests
from gateway.api.bodies import ApiError
from gateway.api.commands import Commands, HistoryOptions, unavailable
from gateway.config.settings import Settings
from gateway.state import Gateway
from gateway.telemetry import metrics
from gateway.telemetry.throttled_log import ThrottledLog

PREFIX = "/api"
_LOG = logging.getLogger("gateway.api")
_THROTTLED = ThrottledLog(_LOG)
# The label of a path under /api that is none of the routes: one series, whatever was asked.
_OTHER = "other"

Handler = Callable[["HttpApi", Commands, object], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    handler: Handler | None  # None: answered without a body (GET)


async def _publish(api: HttpApi, commands: Commands, body: object) -> dict[str, Any]:
    request = bodies.publish_request(body, api.max_payload)
    answer = (await commands.publish([request]))[0]
    if isinstance(answer, ApiError):
        raise answer
    return answer


async def _batch(api: HttpApi, commands: Commands, body: object) -> dict[str, Any]:
    checked = bodies.batch_requests(body, api.max_payload)
    valid = [r for r in checked if isinstance(r, bodies.PublishRequest)]
    answers = await commands.publish(valid) if valid else []
    if answers and all(isinstance(a, ApiError) for a in answers):
        raise unavailable()  # none known to have reached Redis: the call is answered as one
    published = iter(answers)
    results: list[Any] = []
    for item in checked:
        result = next(published) if isinstance(item, bodies.PublishRequest) else item
        results.append({"error": result.reason} if isinstance(result, ApiError) else result)
    return {"results": results}


async def _disconnect(api: HttpApi, commands: Commands, body: object) -> dict[str, Any]:
    return {"disconnected": await commands.disconnect(bodies.disconnect_user(body))}


async def _online(api: HttpApi, commands: Commands, body: object) -> dict[str, Any]:
    users = bodies.online_users(body)
    return {"online": await commands.online(users) if users else {}}


ROUTES: dict[str, Route] = {
    "/api/publish": Route("POST", _publish),
    "/api/publish/batch": Route("POST", _batch),
    "/api/disconnect": Route("POST", _disconnect),
    "/api/online": Route("POST", _online),
    "/api/openapi.json": Route("GET", None),
}


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class HttpApi:
    """The API of one worker; its Redis client comes with each request's gateway state."""

    def __init__(self, settings: Settings) -> None:
        self.key_digests = requests.key_digests(settings.api_keys)
        self.max_payload = settings.max_payload_size
        self.max_body = settings.api_max_body_size
        self.max_values = bodies.max_values(settings.max_payload_size)
        self.body_deadline = settings.handshake_timeout
        self.history = HistoryOptions(settings.api_history_length, settings.api_history_ttl)
        self.revocation_ttl = settings.revocation_ttl
        self.prefix = settings.channel_prefix
        self._commands: Commands | None = None

    def _commands_of(self, gateway: Gateway) -> Commands:
        if self._commands is None:
            # The API's own client exists whenever the API is on (gateway/redis_wiring.py).
            assert gateway.api_redis is not None
            self._commands = Commands(
                gateway.redis, gateway.api_redis, self.prefix, self.history, self.revocation_ttl
            )
        return self._commands

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        path = scope["path"]
        label = path if path in ROUTES else _OTHER
        headers: dict[str, str] = {}
        try:
            status, answer = 200, await self._answer(scope, receive, headers)
        except ApiError as exc:
            status, answer = exc.status, {"error": exc.reason}
            if exc.status == 405:
                headers["allow"] = ROUTES[path].method
            if exc.status >= 500:
                _THROTTLED.warning("api %s: %d %s", label, exc.status, exc.reason)
            else:
                _THROTTLED.info("api %s refused: %d %s", label, exc.status, exc.reason)
        metrics.API_REQUESTS.labels(label, str(status)).inc()
        metrics.API_LATENCY.labels(label).observe(time.monotonic() - started)
        await JSONResponse(answer, status_code=status, headers=headers)(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> dict[str, Any]:
        if not requests.authorized(scope, self.key_digests):
            headers["www-authenticate"] = "Bearer"
            raise ApiError(401, "unauthorized")
        route = ROUTES.get(scope["path"])
        if route is None:
            raise ApiError(404, "not_found")
        if scope["method"] != route.method:
            raise ApiError(405, "method_not_allowed")
        if route.handler is None:
            return openapi.SPEC
        requests.check_json_content_type(scope)
        body = requests.parse_json(
            await requests.read_body(scope, receive, self.max_body, self.body_deadline), self.max_values
        )
        gateway: Gateway = scope["state"]["gateway"]
        try:
            return await route.handler(self, self._commands_of(gateway), body)
        except (RedisError, OSError, TimeoutError):
            # What run_apart does not leave in place (a pipeline it could not even start).
            raise unavailable() from None
