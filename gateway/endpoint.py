"""/ws: the one place that knows the admission order.

preflight (origin -> query -> token -> draining -> capacity: gateway/admission/preflight.py) ->
a place in the handshake pool -> lease -> join (the hub, then a subscription Redis confirmed) ->
a resume's replay -> accept -> serve -> undo in reverse. Preflight refusals cost no Redis command
(an HTTP status, or for a browser that offered the bearer subprotocol, an accept closed at once).
"""

from __future__ import annotations

import logging
import time
from functools import partial

from starlette.types import Receive, Scope, Send

from gateway import close_codes
from gateway.admission import subscription
from gateway.admission.auth import offers_bearer
from gateway.admission.groups import Memberships
from gateway.admission.preflight import Refused
from gateway.broker import BrokerUnavailable
from gateway.clock import SYSTEM_CLOCK
from gateway.close_codes import Refusal
from gateway.connection import Connection
from gateway.history.recovery import resume
from gateway.leases.limiter import Lease, LimiterUnavailable
from gateway.leases.revocation import TokenRevoked
from gateway.link import Link, link_of
from gateway.state import Gateway
from gateway.telemetry import metrics

log = logging.getLogger("gateway.endpoint")

_TEXT_PLAIN = [(b"content-type", b"text/plain; charset=utf-8")]


class WebSocketEndpoint:
    """A plain ASGI app speaking the WebSocket messages itself: no per-socket Starlette objects."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway = scope["state"]["gateway"]
        # The server opens with websocket.connect; the accept or a refusal answers it.
        if (await receive())["type"] != "websocket.connect":
            return
        # A browser offers the bearer subprotocol: it must see it selected, and can read a token or
        # Origin refusal only as a close code after the upgrade (4401, 4001, 4403).
        subprotocol = "bearer" if offers_bearer(scope["headers"]) else None
        cleared = gateway.preflight.check(scope, gateway.draining)
        if isinstance(cleared, Refused):
            await _refuse(scope, send, subprotocol, cleared.refusal, cleared.detail)
            return
        link = link_of(scope)
        if link is None:
            log.error(
                "no Link from the server: run under gateway.server.worker.GatewayWorker"
                " (gunicorn -c gunicorn.conf.py)"
            )
            await _refuse(scope, send, subprotocol, close_codes.INTERNAL_ERROR)
            return
        connection = Connection(
            cleared.identity,
            link,
            limits=gateway.connection_limits,
            authenticator=gateway.authenticator,
            clock=SYSTEM_CLOCK,
            envelope=cleared.options.envelope,
            resuming=cleared.options.since is not None,
        )
        admission = _Admission(gateway, connection)
        try:
            refusal = await admission.admit(_address(scope), cleared.options.since)
            if refusal is not None:
                await admission.release()  # before the close: a client that retries finds its place
                await _refuse(scope, send, subprotocol, refusal)
                return
            await admission.serve(receive, send, subprotocol, link)
        finally:
            await admission.release()


def _address(scope: Scope) -> str:
    """The client's address (a trusted proxy's X-Forwarded-For already applied by the server)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


class _Admission:
    """One connection's admission: ``admit`` takes its place, ``serve`` runs it, and ``release``
    gives back what was taken, in reverse, once."""

    __slots__ = ("connection", "gateway", "joined", "lease", "memberships")

    def __init__(self, gateway: Gateway, connection: Connection) -> None:
        self.gateway = gateway
        self.connection = connection
        self.lease: Lease | None = None
        self.joined = False
        self.memberships = Memberships(gateway.hub, gateway.broker, connection)
        connection.on_groups = self.memberships.change

    async def admit(self, address: str, since: str | None) -> Refusal | None:
        """The lease, the subscription and a resume's replay, each waiting on Redis while the
        handshake holds its place in the pool (gateway/admission/handshakes.py); None: admitted."""
        gateway, connection = self.gateway, self.connection
        refusal = gateway.handshakes.enter(connection.user_id, address)
        if refusal is not None:
            return refusal
        try:
            refusal = await self._take()
            if refusal is None and since is not None:
                settings = gateway.settings
                refusal = await resume(
                    gateway.history_reader, connection, since, settings.max_payload_size, gateway.resumes
                )
        finally:
            gateway.handshakes.leave(connection.user_id, address)
        if refusal is None:
            # Ended while it waited: more arrived than its queue holds (admission_backlog), or its
            # place was lost or revoked. Refused now, before any frame of it goes out.
            refusal = connection.end_reason
        if refusal is None and gateway.draining:
            # Admission waited on Redis while the drain began: this worker takes no one new.
            refusal = close_codes.DRAINING
        return refusal

    async def _take(self) -> Refusal | None:
        """A lease, then a subscription Redis has confirmed; None when both are held."""
        gateway, connection = self.gateway, self.connection
        try:
            self.lease = await gateway.limiter.acquire(
                connection.user_id,
                partial(connection.end, close_codes.USER_LIMIT),  # its lease lapsed at the limit
                partial(connection.end, close_codes.DISCONNECTED),  # a disconnect freed its place
                connection.issued_at,
            )
        except LimiterUnavailable:
            return close_codes.REDIS_UNAVAILABLE
        except TokenRevoked:
            return close_codes.TOKEN_REVOKED
        if self.lease is None:
            return close_codes.USER_LIMIT
        connection.connection_id = self.lease.connection_id
        connection.revoked_at = self.lease.revoked_at
        try:
            await subscription.join(gateway.hub, gateway.broker, connection.user_id, connection)
            self.joined = True
            # Its groups and the broadcast: every channel confirmed before a resume reads them.
            await self.memberships.join(connection.groups)
        except BrokerUnavailable:
            return close_codes.REDIS_UNAVAILABLE
        return None

    async def serve(self, receive: Receive, send: Send, subprotocol: str | None, link: Link) -> None:
        """Accept, then run the connection until it ends."""
        gateway, connection = self.gateway, self.connection
        connection.admitted()
        gateway.serving += 1
        # Live before the accept goes out: a client that sees its socket open finds it counted.
        metrics.ACTIVE_CONNECTIONS.inc()
        metrics.WORKER_CONNECTIONS.inc()
        try:
            accept = {
                "type": "websocket.accept",
                "subprotocol": subprotocol,
                "headers": gateway.accept_headers,
            }
            try:
                await send(accept)
            except OSError:
                return  # the client left while its admission waited: it was never accepted
            if link.is_closing():
                return  # the transport was closing: uvicorn wrote no accept
            # Counted only once the accept went out, in the same tick that wrote it.
            metrics.CONNECTIONS.labels("accepted").inc()
            started = time.monotonic()
            try:
                reason = await connection.run(receive, send, self.release)
            finally:
                metrics.CONNECTIONS.labels("closed").inc()
                metrics.CONNECTION_DURATION.observe(time.monotonic() - started)
        finally:
            metrics.ACTIVE_CONNECTIONS.dec()
            metrics.WORKER_CONNECTIONS.dec()
            gateway.serving -= 1
        if reason is not None:
            metrics.REJECTIONS.labels(reason.reason).inc()

    async def release(self) -> None:
        gateway, user_id = self.gateway, self.connection.user_id
        self.memberships.leave()
        if self.joined:
            self.joined = False
            subscription.leave(gateway.hub, gateway.broker, user_id, self.connection)
        lease, self.lease = self.lease, None
        if lease is not None:
            await gateway.limiter.release(lease)


async def _refuse(
    scope: Scope, send: Send, subprotocol: str | None, refusal: Refusal, detail: str = ""
) -> None:
    """Refuse before the upgrade with the refusal's HTTP status where it has one and the client
    made no bearer offer (no socket); otherwise accept and close at once, since a browser can read
    a close code, not a refused handshake (what admission took, if anything, is released first). A
    peer that does not answer the close frame is reset after the protocol's close deadline."""
    metrics.CONNECTIONS.labels("rejected").inc()
    metrics.REJECTIONS.labels(refusal.reason).inc()
    client = scope["client"][0] if scope.get("client") else "-"
    log.info("refused %s: %s (client %s)", refusal.reason, detail or refusal.meaning, client)
    if refusal.http_status is not None and subprotocol is None:
        start = {
            "type": "websocket.http.response.start",
            "status": refusal.http_status,
            "headers": _TEXT_PLAIN,
        }
        await send(start)
        await send({"type": "websocket.http.response.body", "body": f"{refusal.reason}\n".encode()})
        return
    assert refusal.close_code is not None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    await send({"type": "websocket.close", "code": refusal.close_code, "reason": refusal.reason})
