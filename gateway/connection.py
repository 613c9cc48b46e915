"""One accepted socket: a bounded outbox flushed straight into the transport, and a reader.

Delivery appends to the outbox and schedules one flush per event-loop tick, which writes every
queued frame in a single ``transport.write``; while the transport is paused (the client reads
slowly) frames wait in the outbox, and a full outbox ends the connection (4008). No task per
connection writes, and nothing on this path awaits.

The reader runs in the ASGI task itself under one deadline that is the earlier of the idle
timeout and the token's expiry; anything that must end the connection (a full outbox, a bad
refresh, a drain) pulls that deadline to now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Send

from gateway import close_codes, untrusted_json
from gateway.admission.auth import Authenticator, AuthError
from gateway.close_codes import Refusal
from gateway.history.position import Position
from gateway.history.recovery import is_replayed
from gateway.leases.revocation import is_revoked
from gateway.link import Link
from gateway.telemetry import metrics

log = logging.getLogger("gateway.connection")

PONG = b'{"type":"pong"}'
_CLOSE_SEND_TIMEOUT = 1.0


class Connection:
    __slots__ = (
        "_authenticator",
        "_burst",
        "_deadline",
        "_expires_at",
        "_flush_scheduled",
        "_idle_timeout",
        "_link",
        "_oldest_at",
        "_open",
        "_outbox",
        "_queue_size",
        "_rate",
        "_receive",
        "_refilled_at",
        "_send",
        "_tokens",
        "connection_id",
        "end_reason",
        "envelope",
        "issued_at",
        "replayed",
        "revoked_at",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        expires_at: float,
        link: Link,
        receive: Receive,
        send: Send,
        queue_size: int,
        idle_timeout: float,
        authenticator: Authenticator,
        messages_per_second: float,
    ) -> None:
        self.user_id = user_id
        # Its lease's id once admission took one: what a single-connection disconnect names.
        self.connection_id = ""
        self._expires_at = expires_at
        self._link = link
        self._receive = receive
        self._send = send
        self._queue_size = queue_size
        self._idle_timeout = idle_timeout
        self._authenticator = authenticator
        # Token bucket for client messages: a burst of twice the rate, then the rate.
        self._rate = messages_per_second
        self._burst = max(2 * messages_per_second, 1.0)
        self._tokens = self._burst
        self._refilled_at = 0.0
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        # When the oldest frame now queued was read off Redis: one latency sample per flush.
        self._oldest_at = 0.0
        self._open = False
        self._deadline: asyncio.Timeout | None = None
        self.end_reason: Refusal | None = None
        # Envelope mode (?envelope=1 or ?since=): the hub queues JSON envelopes, not raw payloads.
        self.envelope = False
        self.replayed: Position | None = None
        # The token's iat (None: it has none) and the user's last disconnect as admission saw it
        # (ms, 0: none): a refresh must bring a token newer than that disconnect.
        self.issued_at: float | None = None
        self.revoked_at = 0

    def push(self, payload: bytes, received_at: float) -> None:
        """Queue a frame without waiting; a client that lets its outbox fill is ended (4008)."""
        if self.end_reason is not None:
            metrics.MESSAGES_DROPPED.labels("closing").inc()
            return
        outbox = self._outbox
        if len(outbox) >= self._queue_size:
            if self._open and self._link.can_write():
                # A burst to a client that keeps up: write now rather than wait for the tick.
                self._flush()
                outbox = self._outbox
            elif not self._open:
                # Not served yet (admission, a resume's read, the accept): serving it with a hole
                # (a resume saying recovered:true) would lose messages silently. Refused instead.
                self._overflow(close_codes.ADMISSION_BACKLOG)
                return
            elif self._link.is_closing():
                # The client left (or the close began) and the reader has not seen it yet.
                metrics.MESSAGES_DROPPED.labels("closing").inc(len(outbox) + 1)
                outbox.clear()
                return
            else:
                self._overflow(close_codes.SLOW_CONSUMER)
                return
        if not outbox:
            self._oldest_at = received_at
        outbox.append(payload)
        if not self._flush_scheduled and self._open:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _overflow(self, reason: Refusal) -> None:
        dropped = len(self._outbox) + 1
        metrics.MESSAGES_DROPPED.labels(reason.reason).inc(dropped)
        metrics.SEND_QUEUE_OVERFLOWS.inc()
        self._outbox.clear()
        log.warning("send queue full: %d messages dropped, closing it (%s)", dropped, reason.reason)
        self.end(reason)

    def start_with(self, frames: list[bytes], last: Position | None) -> None:
        """Before ``run``: ``frames`` (a recovery and its replay up to ``last``) go out first; a
        frame queued live that the replay carries is dropped."""
        queued = self._outbox if last is None else [f for f in self._outbox if not is_replayed(f, last)]
        self._outbox = frames + queued
        self.replayed = last  # and one that arrives later (the hub checks)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outbox = self._outbox
        if not outbox or self.end_reason is not None or not self._link.can_write():
            return  # a paused transport calls back through on_writable
        self._outbox = []
        self._link.write_frames(outbox)
        metrics.count_sent(len(outbox), self._oldest_at)

    def over_limit(self) -> None:
        """The connection's lease lapsed and the user is at the limit (4029)."""
        self.end(close_codes.USER_LIMIT)

    def revoked(self) -> None:
        """A disconnect freed the connection's place (4003)."""
        self.end(close_codes.DISCONNECTED)

    def end(self, reason: Refusal) -> None:
        """Ask the connection to close with ``reason``'s code; safe to call from anywhere."""
        if self.end_reason is None:
            self.end_reason = reason
            deadline = self._deadline
            # An expired deadline refuses a new time; the reader wakes and sees end_reason anyway.
            if deadline is not None and not deadline.expired():
                deadline.reschedule(asyncio.get_running_loop().time())

    async def run(self, release: Callable[[], Awaitable[None]]) -> Refusal | None:
        """Serve until the client leaves or the connection must end; return the reason it ended.

        ``release`` gives back the lease and subscription; it runs before the close frame goes
        out, so a client that reconnects on 1012 or 4008 finds its place already free.
        """
        self._open = True
        self._link.on_writable = self._flush
        self._link.on_control = self._on_control
        self._flush()  # what arrived between subscribing and accepting
        client_left = False
        try:
            client_left = await self._read()
        finally:
            self._open = False
            self._link.on_writable = None
            self._link.on_control = None
            if self._outbox:
                # Never to be written. Nothing is pushed once release() has taken the connection
                # out of the hub, which it does before it first awaits.
                metrics.MESSAGES_DROPPED.labels("closing").inc(len(self._outbox))
                self._outbox = []
            await release()
        if not client_left and self.end_reason is not None:
            # A client that stopped reading can block this send forever: bound it, then the
            # transport is closed when the ASGI task returns.
            reason = self.end_reason
            message = {"type": "websocket.close", "code": reason.close_code, "reason": reason.reason}
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._send(message), _CLOSE_SEND_TIMEOUT)
        return self.end_reason

    async def _read(self) -> bool:
        """Read client frames until the client leaves (True) or the connection must end (False)."""
        loop = asyncio.get_running_loop()
        receive = self._receive
        link = self._link
        while True:
            try:
                async with asyncio.timeout(None) as deadline:
                    self._deadline = deadline
                    while self.end_reason is None:
                        deadline.reschedule(self._next_deadline(loop.time()))
                        message = await receive()
                        if message["type"] == "websocket.disconnect":
                            return True
                        if not self._spend(1):
                            self.end(close_codes.POLICY_VIOLATION)
                            break
                        text = message.get("text")
                        if text is not None:
                            self._on_text(text)
            except TimeoutError:
                pass
            finally:
                self._deadline = None
            if self.end_reason is not None:
                return False
            if time.time() >= self._authenticator.session_ends_at(self._expires_at):
                self.end_reason = close_codes.SESSION_EXPIRED
                return False
            if loop.time() - link.last_activity >= self._idle_timeout:
                self.end_reason = close_codes.IDLE_TIMEOUT
                return False
            # Only pongs arrived meanwhile: the client is alive, wait again.

    def _spend(self, messages: int) -> bool:
        """Take ``messages`` from the client's budget: a burst of twice its rate, then its rate."""
        now = asyncio.get_running_loop().time()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if self._tokens < messages:
            return False
        self._tokens -= messages
        return True

    def _on_control(self, frames: int) -> bool:
        """Pings and pongs spend the same budget as messages: a ping flood is ended with 1008."""
        if self._spend(frames):
            return True
        self.end(close_codes.POLICY_VIOLATION)
        return False

    def _next_deadline(self, now: float) -> float:
        expiry = now + (self._authenticator.session_ends_at(self._expires_at) - time.time())
        return min(self._link.last_activity + self._idle_timeout, expiry)

    def _on_text(self, text: str) -> None:
        """Client messages: ``{"type":"ping"}`` and ``{"type":"refresh","token":...}``; others are ignored."""
        if len(text) > 8192 + 64 or '"type"' not in text:
            return
        try:
            message = untrusted_json.loads(text)
        except untrusted_json.NotJSON:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ping":
            self.push(PONG, time.monotonic())
        elif kind == "refresh":
            self._refresh(message.get("token"))

    def _refresh(self, token: object) -> None:
        """A valid token of the same user extends the session to the later of the two exps; any
        other ends it with that token's refusal, whose label says why."""
        if token is None or token == "":
            self.end(close_codes.TOKEN_MISSING)
            return
        if not isinstance(token, str):
            self.end(close_codes.TOKEN_INVALID)
            return
        try:
            identity = self._authenticator.validate(token)
        except AuthError as exc:
            self.end(exc.refusal)  # token_invalid (4401) or token_expired (4001)
            return
        if identity.user_id != self.user_id:
            self.end(close_codes.TOKEN_WRONG_USER)
            return
        if is_revoked(identity.issued_at, self.revoked_at):
            self.end(close_codes.TOKEN_REVOKED)
            return
        self._expires_at = max(self._expires_at, identity.expires_at)
        if self.envelope:
            # Only where every frame is typed JSON: in raw mode any frame may be a payload, and an
            # ack could not be told from one published with the same bytes.
            self.push(b'{"type":"refreshed","exp":%d}' % int(self._expires_at), time.monotonic())
