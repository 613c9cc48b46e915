"""One accepted socket: a bounded outbox drained by a writer task, and a reader.

The reader runs in the ASGI task itself under one deadline that is the earlier of the idle
timeout and the token's expiry; anything that must end the connection (a full outbox, a bad
refresh) pulls that deadline to now, so no extra task or timer is needed per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.types import Receive, Send

from gateway import close_codes, metrics
from gateway.auth import Authenticator, AuthError
from gateway.close_codes import Refusal
from gateway.protocol import Activity

PONG = '{"type":"pong"}'
_CLOSE_SEND_TIMEOUT = 1.0


class Connection:
    def __init__(
        self,
        user_id: str,
        expires_at: float,
        receive: Receive,
        send: Send,
        queue_size: int,
        idle_timeout: float,
        authenticator: Authenticator,
        messages_per_second: float,
        activity: Activity | None = None,
    ) -> None:
        self.user_id = user_id
        self._expires_at = expires_at
        self._receive = receive
        self._send = send
        self._queue_size = queue_size
        self._idle_timeout = idle_timeout
        self._authenticator = authenticator
        # Stamped by the protocol on every read (pongs too); a private one when served elsewhere.
        self._activity = activity or Activity(asyncio.get_running_loop().time())
        # Token bucket for client messages: a burst of twice the rate, then the rate.
        self._rate = messages_per_second
        self._burst = max(2 * messages_per_second, 1.0)
        self._tokens = self._burst
        self._refilled_at = 0.0
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        # When the oldest frame now queued was read off Redis: one latency sample per burst.
        self._oldest_at = 0.0
        self._deadline: asyncio.Timeout | None = None
        self.end_reason: Refusal | None = None

    def push(self, text: str, received_at: float) -> None:
        """Queue a frame without waiting; a client that lets its outbox fill is ended (4008)."""
        if self.end_reason is not None:
            metrics.MESSAGES_DROPPED.labels("closing").inc()
            return
        outbox = self._outbox
        if len(outbox) >= self._queue_size:
            metrics.MESSAGES_DROPPED.labels("slow_consumer").inc(len(outbox) + 1)
            metrics.SEND_QUEUE_OVERFLOWS.inc()
            outbox.clear()
            self.end(close_codes.SLOW_CONSUMER)
            return
        if not outbox:
            self._oldest_at = received_at
            self._wake.set()
        outbox.append(text)

    def end(self, reason: Refusal) -> None:
        """Ask the connection to close with ``reason``'s code; safe to call from anywhere."""
        if self.end_reason is None:
            self.end_reason = reason
            if self._deadline is not None:
                self._deadline.reschedule(asyncio.get_running_loop().time())

    async def run(self, release: Callable[[], Awaitable[None]]) -> Refusal | None:
        """Serve until the client leaves or the connection must end; return the reason it ended.

        ``release`` gives back the lease and subscription; it runs before the close frame goes
        out, so a client that reconnects on 1012 or 4008 finds its place already free.
        """
        writer = asyncio.create_task(self._write())
        client_left = False
        try:
            client_left = await self._read()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await writer
            await release()
        if not client_left and self.end_reason is not None:
            # A client that stopped reading can block this send forever: bound it, then the
            # transport is closed when the ASGI task returns.
            message = {"type": "websocket.close", "code": self.end_reason.close_code}
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._send(message), _CLOSE_SEND_TIMEOUT)
        return self.end_reason

    async def _read(self) -> bool:
        """Read client frames until the client leaves (True) or the connection must end (False)."""
        loop = asyncio.get_running_loop()
        receive = self._receive
        while True:
            try:
                async with asyncio.timeout(None) as deadline:
                    self._deadline = deadline
                    while self.end_reason is None:
                        deadline.reschedule(self._next_deadline(loop.time()))
                        message = await receive()
                        if message["type"] == "websocket.disconnect":
                            return True
                        now = loop.time()
                        self._activity.last = now
                        self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._rate)
                        self._refilled_at = now
                        if self._tokens < 1:
                            self.end(close_codes.POLICY_VIOLATION)
                            break
                        self._tokens -= 1
                        text = message.get("text")
                        if text is not None:
                            self._on_text(text)
            except TimeoutError:
                pass
            finally:
                self._deadline = None
            if self.end_reason is not None:
                return False
            if time.time() >= self._expires_at:
                self.end_reason = close_codes.SESSION_EXPIRED
                return False
            if loop.time() - self._activity.last >= self._idle_timeout:
                self.end_reason = close_codes.IDLE_TIMEOUT
                return False
            # Only pongs arrived meanwhile: the client is alive, wait again.

    def _next_deadline(self, now: float) -> float:
        expiry = now + (self._expires_at - time.time())
        return min(self._activity.last + self._idle_timeout, expiry)

    def _on_text(self, text: str) -> None:
        """Client messages: ``{"type":"ping"}`` and ``{"type":"refresh","token":...}``; others are ignored."""
        if len(text) > 8192 + 64 or '"type"' not in text:
            return
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ping":
            self.push(PONG, time.monotonic())
        elif kind == "refresh":
            self._refresh(message.get("token"))

    def _refresh(self, token: object) -> None:
        if not isinstance(token, str):
            self.end(close_codes.POLICY_VIOLATION)
            return
        try:
            user_id, expires_at = self._authenticator.validate(token)
        except AuthError:
            self.end(close_codes.POLICY_VIOLATION)
            return
        if user_id != self.user_id:
            self.end(close_codes.POLICY_VIOLATION)
            return
        self._expires_at = max(self._expires_at, expires_at)

    async def _write(self) -> None:
        send = self._send
        outbox = self._outbox
        wake = self._wake
        while True:
            if not outbox:
                wake.clear()
                await wake.wait()
                continue
            oldest_at = self._oldest_at
            sent = 0
            while outbox:
                await send({"type": "websocket.send", "text": outbox.popleft()})
                sent += 1
            metrics.MESSAGES_SENT.inc(sent)
            metrics.DELIVERY_LATENCY.observe(time.monotonic() - oldest_at)
