"""One socket: a bounded outbox flushed straight into the transport, and a reader.

The first frame in an empty outbox schedules one flush for the event-loop tick, which writes every
queued frame in a single ``transport.write``; while the transport is paused (the client reads
slowly) frames wait, and a full outbox ends the connection (4008). Nothing on this path awaits.

A connection walks ``State`` once. Its reader runs in the ASGI task; one timer on the clock it is
handed (gateway/clock.py) comes due at the earlier of the idle timeout and the token's expiry.
Whatever must end it (that timer, a full outbox, a bad refresh, a drain) calls ``end``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import Receive, Send

from gateway import client_messages, close_codes
from gateway.admission.auth import Authenticator, Identity
from gateway.client_messages import MessageBudget
from gateway.clock import Clock, Timer
from gateway.close_codes import Refusal
from gateway.config.settings import Settings
from gateway.history import cursor as cursors
from gateway.link import Link
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE
from gateway.telemetry import metrics
from gateway.wire import HistoryMessage

log = logging.getLogger("gateway.connection")

_CLOSE_SEND_TIMEOUT = 1.0


class State(enum.Enum):
    """A connection's life, after websockets' ``State`` and Starlette's ``WebSocketState``."""

    CONNECTING = enum.auto()  # in admission (lease, subscription, a resume's read): frames wait
    ADMITTED = enum.auto()  # admission passed, the accept is on its way: frames still wait
    OPEN = enum.auto()  # served: frames are written, the reader and the timer run
    CLOSING = enum.auto()  # ended (``end_reason`` says why) or the client left: no more frames
    CLOSED = enum.auto()  # run() returned: its place released, its close frame sent


# Module constants: the delivery path compares states for every frame.
_OPEN, _CLOSING, _CLOSED = State.OPEN, State.CLOSING, State.CLOSED


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may queue, idle and send; built once per worker (gateway/state.py)."""

    queue_size: int  # frames queued before it is ended (4008; 1013 before it is served)
    idle_timeout: float  # seconds without a client frame (pongs count)
    messages_per_second: float  # client messages, pings and pongs; bursts of twice that
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE  # bounds an envelope it builds itself

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            settings.send_queue_size,
            settings.idle_timeout,
            settings.client_messages_per_second,
            settings.max_payload_size,
        )


class Connection:
    __slots__ = (
        "_authenticator",
        "_budget",
        "_clock",
        "_early",
        "_expires_at",
        "_limits",
        "_link",
        "_oldest_at",
        "_outbox",
        "_timer",
        "_wake",
        "composite",
        "connection_id",
        "cursor",
        "end_reason",
        "envelope",
        "groups",
        "issued_at",
        "on_groups",
        "revoked_at",
        "state",
        "user_id",
    )

    def __init__(
        self,
        identity: Identity,
        link: Link,
        *,
        limits: ConnectionLimits,
        authenticator: Authenticator,
        clock: Clock,
        envelope: bool = False,
        resuming: bool = False,
    ) -> None:
        self.user_id = identity.user_id
        # Its lease's id once admission took one: what a single-connection disconnect names.
        self.connection_id = ""
        self._expires_at = identity.expires_at
        # The token's iat (None: it has none) and the user's last disconnect as admission saw it
        # (ms, 0: none): a refresh must bring a token newer than that disconnect.
        self.issued_at = identity.issued_at
        self.revoked_at = 0
        self._link = link
        self._limits = limits
        self._authenticator = authenticator
        self._clock = clock
        self._budget = MessageBudget(limits.messages_per_second)
        self._outbox: list[bytes] = []
        # When the oldest frame now queued was read off Redis: one latency sample per flush.
        self._oldest_at = 0.0
        self.state = State.CONNECTING
        self.end_reason: Refusal | None = None
        # The reader's wake-up (``end`` pulls it to now) and the idle-or-expiry timer, while OPEN.
        self._wake: asyncio.Timeout | None = None
        self._timer: Timer | None = None
        # Envelope mode (?envelope=1 or ?since=): the hub queues JSON envelopes, not raw payloads.
        self.envelope = envelope
        # The groups of its current token, and what admission (gateway/admission/groups.py) calls
        # when a refresh names others: the hub and the broker follow.
        self.groups = identity.groups
        self.on_groups: Callable[[tuple[str, ...]], None] | None = None
        # Envelope sockets: where it stands per source, sent as each frame's position. A resuming
        # one keeps what arrives while its replay is read (``_early``) and builds it after.
        self.cursor = cursors.Cursor(int(clock.time() * 1000))
        self.composite = resuming
        self._early: list[bytes | tuple[str | None, HistoryMessage]] | None = [] if resuming else None

    def push(self, payload: bytes, received_at: float) -> None:
        """Queue a frame without waiting; a client that lets its outbox fill is ended (4008)."""
        state = self.state
        if state is _CLOSING or state is _CLOSED:
            metrics.MESSAGES_DROPPED.labels("closing").inc()
            return
        if self._early is not None:
            self._keep_early(payload)
            return
        outbox = self._outbox
        if len(outbox) >= self._limits.queue_size:
            if state is not _OPEN:
                # Not served yet (admission, a resume's read, the accept): serving it with a hole
                # (a resume saying recovered:true) would lose messages silently. Refused instead.
                self._overflow(close_codes.ADMISSION_BACKLOG)
                return
            if self._link.can_write():
                # A burst to a client that keeps up: write now rather than wait for the tick.
                self._flush()
                outbox = self._outbox
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
            if state is _OPEN:
                # A non-empty outbox has its flush due already (or waits for on_writable).
                asyncio.get_running_loop().call_soon(self._flush)
        outbox.append(payload)

    def _overflow(self, reason: Refusal) -> None:
        dropped = len(self._outbox) + 1
        metrics.MESSAGES_DROPPED.labels(reason.reason).inc(dropped)
        metrics.SEND_QUEUE_OVERFLOWS.inc()
        self._outbox.clear()
        log.warning("send queue full: %d messages dropped, closing it (%s)", dropped, reason.reason)
        self.end(reason)

    def push_history(
        self, group: str | None, message: HistoryMessage, shared: bytes | None, received_at: float
    ) -> None:
        """An envelope socket's history message (gateway/hub.py ``Outbox``)."""
        if self._early is not None:
            self._keep_early((group, message))
        elif (frame := self._frame(group, message, shared)) is not None:
            self.push(frame, received_at)

    def _frame(self, group: str | None, message: HistoryMessage, shared: bytes | None) -> bytes | None:
        frame = cursors.frame_for(self.cursor, group, message, shared)
        if frame is None:
            metrics.MESSAGES_DROPPED.labels("duplicate").inc()
            return None
        return frame if cursors.fits(frame, self._limits.max_payload_size) else None

    def _keep_early(self, item: bytes | tuple[str | None, HistoryMessage]) -> None:
        assert self._early is not None
        if self.state is _CLOSING:
            metrics.MESSAGES_DROPPED.labels("closing").inc()
        elif len(self._early) >= self._limits.queue_size:
            # Serving it with a hole (a resume saying recovered:true) would lose messages silently.
            self._early = []
            self._overflow(close_codes.ADMISSION_BACKLOG)
        else:
            self._early.append(item)

    def start_with(self, frames: list[bytes], cursor: cursors.Cursor | None) -> None:
        """Before ``run``: ``frames`` (a recovery and its replay, which took the socket to
        ``cursor``; None: not recovered) go out first, then what arrived meanwhile, less what the
        replay carried."""
        early, self._early = self._early or [], None
        if cursor is not None:
            self.cursor = cursor
        for item in early:
            frame = item if isinstance(item, bytes) else self._frame(*item, None)
            if frame is not None:
                frames.append(frame)
        self.composite = self.cursor.composite
        self._outbox = frames

    def change_groups(self, groups: tuple[str, ...]) -> None:
        """A refresh named other groups: the socket is a member of exactly those from now on."""
        if groups == self.groups:
            return
        left, self.groups = self.groups, groups
        self.cursor.change_groups(left, groups, int(self._clock.time() * 1000))
        # A joined group's ``j`` entry makes every frame's cursor its own.
        self.composite = self.cursor.composite
        if self.on_groups is not None:
            self.on_groups(groups)

    def _flush(self) -> None:
        outbox = self._outbox
        if not outbox or self.state is not _OPEN or not self._link.can_write():
            return  # a paused transport calls back through on_writable
        self._outbox = []
        self._link.write_frames(outbox)
        metrics.count_sent(len(outbox), self._oldest_at)

    def admitted(self) -> None:
        """Admission holds its lease and subscription, and its accept goes out next."""
        if self.state is State.CONNECTING:
            self.state = State.ADMITTED
        elif self.state is not _CLOSING:
            raise RuntimeError(f"admitted while {self.state.name}")

    def end(self, reason: Refusal) -> None:
        """Ask the connection to close with ``reason``'s code; safe to call from anywhere, once
        counts (a later reason, or one after the client left, changes nothing)."""
        if self.state is _CLOSING or self.state is _CLOSED:
            return
        self.state = _CLOSING
        self.end_reason = reason
        if self._wake is not None:
            self._wake.reschedule(asyncio.get_running_loop().time())

    async def run(
        self, receive: Receive, send: Send, release: Callable[[], Awaitable[None]]
    ) -> Refusal | None:
        """Serve on the socket's ASGI ``receive`` and ``send`` until the client leaves or the
        connection must end; return the reason it ended.

        ``release`` gives back the lease and subscription; it runs before the close frame goes
        out, so a client that reconnects on 1012 or 4008 finds its place already free.
        """
        if self.state is State.ADMITTED:
            self.state = _OPEN
        elif self.state is not _CLOSING:  # ended while its accept went out: it closes at once
            raise RuntimeError(f"run() while {self.state.name}")
        link = self._link
        link.on_writable = self._flush
        link.on_control = self._spend
        self._flush()  # what arrived between subscribing and accepting
        try:
            self._arm()
            client_left = await self._read(receive)
        finally:
            if self.state is _OPEN:
                self.state = _CLOSING  # the client left
            if self._timer is not None:
                self._timer.cancel()
            link.on_writable = None
            link.on_control = None
            if self._outbox:
                # Never to be written. Nothing is pushed once release() has taken the connection
                # out of the hub, which it does before it first awaits.
                metrics.MESSAGES_DROPPED.labels("closing").inc(len(self._outbox))
                self._outbox = []
            await release()
        reason = self.end_reason
        if not client_left and reason is not None:
            # A client that stopped reading can block this send forever: bound it, then the
            # transport is closed when the ASGI task returns.
            message = {"type": "websocket.close", "code": reason.close_code, "reason": reason.reason}
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(send(message), _CLOSE_SEND_TIMEOUT)
        self.state = _CLOSED
        return reason

    async def _read(self, receive: Receive) -> bool:
        """Read client frames until the client leaves (True) or the connection ends (False)."""
        try:
            async with asyncio.timeout(None) as self._wake:
                while self.state is _OPEN:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        return True
                    if self._spend(1) and (text := message.get("text")) is not None:
                        self._on_text(text)
        except TimeoutError:
            pass  # end() woke it
        finally:
            self._wake = None
        return False

    def _arm(self) -> None:
        """Set the timer for the earlier of the idle timeout and the session's end."""
        clock = self._clock
        expiry = clock.monotonic() + self._authenticator.session_ends_at(self._expires_at) - clock.time()
        idle = self._link.last_activity + self._limits.idle_timeout
        self._timer = clock.call_at(min(idle, expiry), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state is not _OPEN:
            return
        clock = self._clock
        if clock.time() >= self._authenticator.session_ends_at(self._expires_at):
            self.end(close_codes.SESSION_EXPIRED)
        elif clock.monotonic() - self._link.last_activity >= self._limits.idle_timeout:
            self.end(close_codes.IDLE_TIMEOUT)
        else:
            self._arm()  # a client frame or a refresh moved it since: wait again

    def _spend(self, frames: int) -> bool:
        """Every client frame, pings and pongs too (the protocol reports those), spends the budget:
        a flood is ended with 1008."""
        if self._budget.spend(frames, self._clock.monotonic()):
            return True
        self.end(close_codes.POLICY_VIOLATION)
        return False

    def _on_text(self, text: str) -> None:
        message = client_messages.parse(text)
        if message is None:
            return
        if message.kind == "ping":
            self.push(client_messages.PONG, time.monotonic())
            return
        token = client_messages.refreshed(self._authenticator, message.token, self.user_id, self.revoked_at)
        if isinstance(token, Refusal):
            self.end(token)
            return
        self._expires_at = max(self._expires_at, token.expires_at)
        self.change_groups(token.groups)
        if self.envelope:
            # Only where every frame is typed JSON: in raw mode any frame may be a payload, and an
            # ack could not be told from one published with the same bytes.
            self.push(b'{"type":"refreshed","exp":%d}' % int(self._expires_at), time.monotonic())
