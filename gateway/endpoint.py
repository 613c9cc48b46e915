"""/ws: the one place that knows the admission order.

origin -> query -> token -> capacity (the worker's; the user's places all held here) -> a place in
the handshake pool -> lease -> subscribe (confirmed by Redis) -> accept -> serve -> undo in reverse.
Origin, query and token refusals cost no Redis command (an HTTP status, or for a browser that
offered the bearer subprotocol, an accept closed at once), nor do the capacity checks; the
connection joins the hub before it subscribes, so nothing published after the subscription is
confirmed can miss it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Scope, Send

from gateway import close_codes
from gateway.admission import query
from gateway.admission.auth import AuthError, offers_bearer
from gateway.broker import BrokerUnavailable
from gateway.close_codes import Refusal
from gateway.connection import Connection
from gateway.history.recovery import parse_options, resume
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
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        # A browser offers the bearer subprotocol: it must see it selected, and can read a token or
        # Origin refusal only as a close code after the upgrade (4401, 4001, 4403).
        subprotocol = "bearer" if offers_bearer(headers) else None
        refuse = _deny if subprotocol is None else _refusal_closer(subprotocol)

        if not _origin_allowed(headers, gateway.settings.cors_origins):
            await refuse(scope, send, close_codes.ORIGIN_FORBIDDEN, "origin not allowed")
            return
        try:
            fields = query.parse(scope["query_string"])
        except query.MalformedQuery as exc:
            await refuse(scope, send, close_codes.QUERY_INVALID, str(exc))
            return
        try:
            identity = gateway.authenticator.authenticate(fields, headers)
        except AuthError as exc:
            await refuse(scope, send, exc.refusal, str(exc))
            return
        options = parse_options(fields)  # envelope, since: before the query goes
        # Every open socket keeps its scope for life: the request headers and the query string
        # (with its token) are not needed past this point; dropping them saves about a kilobyte
        # per connection and keeps no token in memory.
        del headers[:]
        scope["query_string"] = b""

        refusal = _refused_here(gateway, identity.user_id, options.since is not None)
        if refusal is not None:
            await _refuse_after_upgrade(scope, send, subprotocol, refusal)
            return
        settings = gateway.settings

        link = link_of(scope)
        if link is None:
            log.error(
                "no Link from the server: run under gateway.server.worker.GatewayWorker"
                " (gunicorn -c gunicorn.conf.py)"
            )
            await _refuse_after_upgrade(scope, send, subprotocol, close_codes.INTERNAL_ERROR)
            return
        connection = Connection(
            identity.user_id,
            identity.expires_at,
            link,
            receive,
            send,
            settings.send_queue_size,
            settings.idle_timeout,
            gateway.authenticator,
            settings.client_messages_per_second,
        )
        connection.envelope = options.envelope
        connection.issued_at = identity.issued_at
        admission = _Admission(gateway, connection)
        try:
            refusal = await _take_in_pool(gateway, admission, _address(scope), options.since)
            if refusal is None:
                # Ended while it waited: more arrived than its queue holds (admission_backlog), or
                # its place was lost or revoked. Refused now, before any frame of it goes out.
                refusal = connection.end_reason
            if refusal is None and gateway.draining:
                # Admission waited on Redis while the drain began: this worker takes no one new.
                refusal = close_codes.DRAINING
            if refusal is not None:
                await admission.release()  # before the close: a client that retries finds its place
                await _refuse_after_upgrade(scope, send, subprotocol, refusal)
                return
            gateway.serving += 1
            try:
                await _serve(send, subprotocol, gateway.accept_headers, connection, link, admission.release)
            finally:
                gateway.serving -= 1
        finally:
            await admission.release()


def _refused_here(gateway: Gateway, user_id: str, resuming: bool) -> Refusal | None:
    """What this worker can refuse on its own, without a Redis command or a place in the pool."""
    if gateway.draining:
        return close_codes.DRAINING
    if gateway.hub.connection_count >= gateway.settings.max_connections_per_worker:
        return close_codes.OVERLOADED
    if gateway.hub.count(user_id) >= gateway.settings.max_connections_per_user:
        # Every place of the user is held here: Redis could only answer 4029.
        return close_codes.USER_LIMIT
    if resuming and not gateway.resumes.allows(user_id):
        return close_codes.TOO_MANY_RESUMES
    return None


async def _take_in_pool(
    gateway: Gateway, admission: _Admission, address: str, since: str | None
) -> Refusal | None:
    """The lease, the subscription and a resume's replay, each waiting on Redis while the
    handshake holds its place in the pool (gateway/admission/handshakes.py)."""
    user_id = admission.connection.user_id
    refusal = gateway.handshakes.enter(user_id, address)
    if refusal is not None:
        return refusal
    try:
        refusal = await admission.take()
        if refusal is None and since is not None:
            refusal = await resume(
                gateway.history_reader,
                admission.connection,
                since,
                gateway.settings.max_payload_size,
                gateway.resumes,
            )
        return refusal
    finally:
        gateway.handshakes.leave(user_id, address)


def _address(scope: Scope) -> str:
    """The client's address (a trusted proxy's X-Forwarded-For already applied by the server)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


class _Admission:
    """What admission took for one connection; ``release`` gives it back in reverse, once.

    The hub is the registry of local users: its first connection subscribes the user's channel,
    a later one shares the wait for the same confirmation, and the last one out unsubscribes it.
    """

    __slots__ = ("connection", "gateway", "in_hub", "lease")

    def __init__(self, gateway: Gateway, connection: Connection) -> None:
        self.gateway = gateway
        self.connection = connection
        self.lease: Lease | None = None
        self.in_hub = False

    async def take(self) -> Refusal | None:
        """A lease, then a subscription Redis has confirmed; None when both are held."""
        gateway, connection = self.gateway, self.connection
        try:
            self.lease = await gateway.limiter.acquire(
                connection.user_id, connection.over_limit, connection.revoked, connection.issued_at
            )
        except LimiterUnavailable:
            return close_codes.REDIS_UNAVAILABLE
        except TokenRevoked:
            return close_codes.TOKEN_REVOKED
        if self.lease is None:
            return close_codes.USER_LIMIT
        connection.connection_id = self.lease.connection_id
        connection.revoked_at = self.lease.revoked_at
        # In the hub before subscribing: a message that follows the confirmation finds it.
        first = gateway.hub.add(connection.user_id, connection)
        self.in_hub = True
        try:
            if first:
                await gateway.broker.subscribe(connection.user_id)
            else:
                await gateway.broker.confirmed(connection.user_id)
        except BrokerUnavailable:
            return close_codes.REDIS_UNAVAILABLE
        return None

    async def release(self) -> None:
        gateway, user_id = self.gateway, self.connection.user_id
        if self.in_hub:
            self.in_hub = False
            if gateway.hub.remove(user_id, self.connection):
                gateway.broker.unsubscribe(user_id)
        lease, self.lease = self.lease, None
        if lease is not None:
            await gateway.limiter.release(lease)


async def _serve(
    send: Send,
    subprotocol: str | None,
    accept_headers: list[tuple[bytes, bytes]],
    connection: Connection,
    link: Link,
    release: Callable[[], Awaitable[None]],
) -> None:
    # Live before the accept goes out: a client that sees its socket open finds it counted.
    metrics.ACTIVE_CONNECTIONS.inc()
    metrics.WORKER_CONNECTIONS.inc()
    try:
        try:
            await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": accept_headers})
        except OSError:
            return  # the client left while its admission waited: it was never accepted
        if link.is_closing():
            return  # the transport was closing: uvicorn wrote no accept
        # Counted only once the accept went out, in the same tick that wrote it.
        metrics.CONNECTIONS.labels("accepted").inc()
        started = time.monotonic()
        try:
            reason = await connection.run(release)
        finally:
            metrics.CONNECTIONS.labels("closed").inc()
            metrics.CONNECTION_DURATION.observe(time.monotonic() - started)
    finally:
        metrics.ACTIVE_CONNECTIONS.dec()
        metrics.WORKER_CONNECTIONS.dec()
    if reason is not None:
        metrics.REJECTIONS.labels(reason.reason).inc()


def _origin_allowed(headers: list[tuple[bytes, bytes]], allowed: tuple[str, ...]) -> bool:
    """Exact match against CORS_ORIGINS. No Origin at all passes: browsers always send one, and
    a non-browser client could forge any value, so refusing it would protect nothing."""
    if not allowed:
        return True
    origins = [value.decode("latin-1") for name, value in headers if name == b"origin"]
    return not origins or (len(origins) == 1 and origins[0] in allowed)


async def _deny(scope: Scope, send: Send, refusal: Refusal, detail: str) -> None:
    """Refuse before the upgrade with an HTTP status: no socket, no Redis command."""
    _count_refusal(scope, refusal, detail)
    assert refusal.http_status is not None
    start = {"type": "websocket.http.response.start", "status": refusal.http_status, "headers": _TEXT_PLAIN}
    await send(start)
    await send({"type": "websocket.http.response.body", "body": f"{refusal.reason}\n".encode()})


def _refusal_closer(subprotocol: str) -> Callable[[Scope, Send, Refusal, str], Awaitable[None]]:
    async def close(scope: Scope, send: Send, refusal: Refusal, detail: str) -> None:
        await _refuse_after_upgrade(scope, send, subprotocol, refusal, detail)

    return close


async def _refuse_after_upgrade(
    scope: Scope, send: Send, subprotocol: str | None, refusal: Refusal, detail: str = ""
) -> None:
    """Accept and close at once: a browser can read a close code, not a refused handshake. The
    socket never reaches the hub, the limiter or Redis; a peer that does not answer the close
    frame is reset after the protocol's close deadline."""
    _count_refusal(scope, refusal, detail or refusal.meaning)
    assert refusal.close_code is not None
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    await send({"type": "websocket.close", "code": refusal.close_code, "reason": refusal.reason})


def _count_refusal(scope: Scope, refusal: Refusal, detail: str) -> None:
    metrics.CONNECTIONS.labels("rejected").inc()
    metrics.REJECTIONS.labels(refusal.reason).inc()
    client = scope["client"][0] if scope.get("client") else "-"
    log.info("refused %s: %s (client %s)", refusal.reason, detail, client)
