"""The ports the gateway listens on, and which paths each one serves.

``WEBSOCKET_PORT`` serves every path but those a port of their own takes away:

- ``METRICS_PORT``, when set: ``/metrics`` (every metric of the host) and ``/healthz/websocket``
  (the host name, the worker's pid and counts) are for the inside network. The nginx template
  (deploy/nginx.conf) answers 404 for them at the edge; a deployment without such a proxy, or one
  that exposes the gateway's port directly, sets ``METRICS_PORT`` and keeps that port off the
  public network. It also answers ``/healthz`` and ``/healthz/redis``, for probes that reach only
  it.
- ``WEBSOCKET_DEV_CONSOLE_PORT``, with the console on: ``/dev`` and everything under it, on
  127.0.0.1 whatever ``WEBSOCKET_HOST`` says, and ``/ws`` for the page's socket. The console mints
  tokens for anyone, and a check of the client's address cannot tell a local developer from a
  proxy on the same host (one that forwards no client address looks local, and
  ``FORWARDED_ALLOW_IPS`` trusts 127.0.0.1 by default). No header changes the port a request
  arrived on: the ASGI scope's ``server`` is the listening socket's own address.

Every worker serves every port (gunicorn.conf.py binds them all, and refuses one that is taken);
``PortMap.misrouted`` tells a request on the wrong one, which is answered 404 as if the path did
not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from gateway.config.settings import Settings

# The console's listener is for this machine alone, whatever WEBSOCKET_HOST says.
CONSOLE_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Listener:
    """One port the gateway listens on and the paths taken away from ``WEBSOCKET_PORT`` for it."""

    variable: str  # the setting that names the port, for start-up errors
    host: str
    port: int
    # Served on this port only: these paths and every path under ``subtree``.
    only_here: frozenset[str] = frozenset()
    subtree: str | None = None
    # Served here as well as on WEBSOCKET_PORT.
    also_here: frozenset[str] = frozenset()

    @property
    def bind(self) -> str:
        """The address as gunicorn's ``bind`` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def owns(self, path: str) -> bool:
        return path in self.only_here or (self.subtree is not None and path.startswith(self.subtree))


class PortMap:
    """The ports of one gateway: ``WEBSOCKET_PORT`` and the ones the settings add beside it."""

    def __init__(self, settings: Settings) -> None:
        self.public = Listener("WEBSOCKET_PORT", settings.host, settings.port)
        side = []
        if settings.metrics_port:
            side.append(
                Listener(
                    "METRICS_PORT",
                    settings.host,
                    settings.metrics_port,
                    only_here=frozenset({"/metrics", "/healthz/websocket"}),
                    also_here=frozenset({"/healthz", "/healthz/redis"}),
                )
            )
        if settings.dev_console:
            side.append(
                Listener(
                    "WEBSOCKET_DEV_CONSOLE_PORT",
                    CONSOLE_HOST,
                    settings.dev_console_port,
                    only_here=frozenset({"/dev"}),
                    subtree="/dev/",
                    also_here=frozenset({"/ws"}),
                )
            )
        self.side = tuple(side)

    @property
    def all(self) -> tuple[Listener, ...]:
        return (self.public, *self.side)

    def misrouted(self, scope: Scope) -> bool:
        """Whether ``scope`` asks the port it came in on for a path served only elsewhere."""
        server = scope.get("server")
        path = scope["path"]
        for listener in self.side:
            if server is not None and server[1] == listener.port:
                return not (listener.owns(path) or path in listener.also_here)
        return any(listener.owns(path) for listener in self.side)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # A denial response: the handshake is answered 404, never upgraded.
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"Not Found"})
        return
    await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
