"""The development console (``WEBSOCKET_DEV_CONSOLE``, which ``make run`` sets): a page that
connects with the JS client, shows frames, states and close codes, and publishes to its user.

Its routes exist only with the flag. It mints a token for any user id typed in, so it is a hole
in authentication by design, and these walls keep it to the developer's own machine: it answers
only on a listener of its own on 127.0.0.1 (``WEBSOCKET_DEV_CONSOLE_PORT``; 404 on every other
port, gateway/ports.py), where no proxy in front of the public port reaches it; there only a
loopback client (a trusted proxy's forwarded address counts) that named a loopback ``Host`` (a
DNS-rebinding page names its own host); and the POSTs take JSON only (a cross-site form cannot
send it, and a cross-site fetch of it needs a CORS preflight, which nothing here answers).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway import untrusted_json
from gateway.admission.auth import AuthError, issue_token
from gateway.keys import user_id_problem
from gateway.payload_limit import PayloadTooLarge
from gateway.ports import CONSOLE_HOST
from gateway.publishing.publisher import AsyncPublisher
from gateway.state import Gateway

log = logging.getLogger("gateway.dev_console")

# The JS client, read from the repository at each request: an edit shows on reload. A checkout
# without it (the Docker image) answers 404, and the page says so.
CLIENT_MODULE = Path(__file__).resolve().parent.parent / "clients" / "js" / "src" / "index.js"
_STATIC = resources.files("gateway").joinpath("static")
DEFAULT_TOKEN_TTL = 300
_TOKEN_TTL_BOUNDS = (5, 86_400)
_MAX_BODY = 1024 * 1024
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
# Everything from this origin: no CDN, no inline script, no framing.
_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


def routes() -> list[Route]:
    """The console's routes, added to the app only when the flag is on."""
    return [
        Route("/dev", _page("dev-console.html")),
        Route("/dev/console.js", _page("dev-console.js")),
        Route("/dev/console.css", _page("dev-console.css")),
        # The page names its icon: a browser would otherwise ask for /favicon.ico and log a 404.
        Route("/dev/favicon.svg", _page("dev-console.svg")),
        Route("/dev/gateway-client.js", _client_module),
        Route("/dev/token", _token, methods=["POST"]),
        Route("/dev/publish", _publish, methods=["POST"]),
    ]


def warn(port: int) -> None:
    log.warning(
        "WEBSOCKET_DEV_CONSOLE is on: http://%s:%d/dev mints tokens for any user and"
        " publishes to them. Development only: never set it in production.",
        CONSOLE_HOST,
        port,
    )


def _local(request: Request) -> Response | None:
    """403 unless both the client and the Host it named are this machine."""
    client = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(client).is_loopback
    except ValueError:
        loopback = False
    host = request.headers.get("host", "").lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if loopback and name in _LOOPBACK_HOSTS:
        return None
    return PlainTextResponse("the dev console answers loopback clients only\n", 403, headers=_HEADERS)


def _page(name: str) -> Any:
    async def serve(request: Request) -> Response:
        refused = _local(request)
        if refused is not None:
            return refused
        body = _STATIC.joinpath(name).read_bytes()
        return Response(body, media_type=_TYPES[Path(name).suffix], headers=_HEADERS)

    return serve


async def _client_module(request: Request) -> Response:
    refused = _local(request)
    if refused is not None:
        return refused
    try:
        body = CLIENT_MODULE.read_bytes()
    except OSError:
        return PlainTextResponse("clients/js/src/index.js is not in this checkout\n", 404, headers=_HEADERS)
    return Response(body, media_type="text/javascript", headers=_HEADERS)


async def _json_body(request: Request) -> dict[str, Any] | Response:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send application/json")
    body = await request.body()
    if len(body) > _MAX_BODY:
        return _error(413, "body too large")
    try:
        parsed = untrusted_json.loads(body.decode())
    except (UnicodeDecodeError, untrusted_json.NotJSON):
        return _error(400, "body is not JSON")
    return parsed if isinstance(parsed, dict) else _error(400, "body must be a JSON object")


async def _token(request: Request) -> Response:
    """``{"user": id, "ttl": seconds}`` -> ``{"token": JWT, "exp": unix seconds}``."""
    refused = _local(request)
    if refused is not None:
        return refused
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    gateway: Gateway = request.state.gateway
    settings = gateway.settings
    user, ttl = body.get("user"), body.get("ttl", DEFAULT_TOKEN_TTL)
    if not isinstance(user, str):
        return _error(400, "user: a string")
    problem = user_id_problem(user)
    if problem is not None:
        return _error(400, f"user: {problem}")
    low, high = _TOKEN_TTL_BOUNDS
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not low <= ttl <= high:
        return _error(400, f"ttl: {low} to {high} seconds")
    if not settings.jwt_algorithm.startswith("HS"):
        algorithm = settings.jwt_algorithm
        return _error(501, f"dev tokens need an HS* JWT_ALGORITHM (this gateway verifies {algorithm})")
    now = time.time()
    token = issue_token(settings, user, float(ttl), now)
    return JSONResponse({"token": token, "exp": int(now + ttl)}, headers=_HEADERS)


async def _publish(request: Request) -> Response:
    """``Authorization: Bearer <token>``, ``{"payload": text}``: published as it is, with history,
    to the token's user. -> ``{"receivers": n, "position": p}``."""
    refused = _local(request)
    if refused is not None:
        return refused
    gateway: Gateway = request.state.gateway
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "token_missing")
    try:
        user = gateway.authenticator.validate(token.strip()).user_id
    except AuthError as exc:
        return _error(401, exc.refusal.reason)
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    payload = body.get("payload")
    if not isinstance(payload, str):
        return _error(400, "payload: the text to publish")
    settings = gateway.settings
    publisher = AsyncPublisher(
        client=gateway.redis, prefix=settings.channel_prefix, max_payload_size=settings.max_payload_size
    )
    try:
        published = await publisher.publish(user, payload)
    except PayloadTooLarge as exc:
        return _error(413, str(exc))
    except (RedisError, OSError):
        return _error(503, "redis_unavailable")
    return JSONResponse({"receivers": int(published), "position": published.position}, headers=_HEADERS)


def _error(status: int, reason: str) -> Response:
    return JSONResponse({"error": reason}, status, headers=_HEADERS)
