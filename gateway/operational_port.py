"""With ``METRICS_PORT`` set, what is served on which port.

``/metrics`` (every metric of the host) and ``/healthz/websocket`` (the host name, the worker's
pid and counts) are for the inside network. The nginx template (deploy/nginx.conf) answers 404
for them at the edge; a deployment without such a proxy, or one that exposes the gateway's port
directly, sets ``METRICS_PORT`` and keeps that port off the public network. Both ports are
served by every worker (gunicorn binds both); this module tells a request on the wrong one.
"""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

OPERATIONAL_ONLY = frozenset({"/metrics", "/healthz/websocket"})
# Also answered on the metrics port, for probes that reach only that one.
BOTH = frozenset({"/healthz", "/healthz/redis"})


def misrouted(scope: Scope, metrics_port: int) -> bool:
    """Whether ``scope`` asks the port it came in on for what is served only on the other one."""
    on_metrics_port = scope["server"] is not None and scope["server"][1] == metrics_port
    path = scope["path"]
    if on_metrics_port:
        return path not in OPERATIONAL_ONLY and path not in BOTH
    return path in OPERATIONAL_ONLY


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        # A denial response: the handshake is answered 404, never upgraded.
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"Not Found"})
        return
    await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
