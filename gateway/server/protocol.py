"""uvicorn's WebSocket protocol, adapted: client activity exposed to the app, bounded control
frames and closes, and two handshake fixes (the HTTP side is in ``gateway.server.http``).

- The gateway's hot path bypasses ASGI ``send``: the protocol is handed to the app as a ``Link``
  (``gateway.link.offer_link``) that writes every queued frame in one ``transport.write``,
  says when the transport can take more and calls back when it can again. It also stamps each
  read, since the idle timeout counts pongs and pongs never reach the app.

- Invalid UTF-8 in a client's text frame closes it with 1007 and one log line, not a traceback.
- A denial response (``send_denial_response``) never marks the handshake complete upstream, so
  every refusal also logged "ASGI callable returned without completing handshake" at ERROR.
- A handshake the websockets parser rejects (an oversized request line or header, as a 100 KB
  token makes) left its 414/431 answer unsent and the socket open until the client gave up.
- Every client frame spends the client's message budget: a message's frames but its last (the
  app counts that one, as the message) and pings and pongs, which never reach the app. Reads are
  parsed in slices, so a flood is stopped within a slice of going over.
- Once its close frame is out, a socket reads only what the close handshake needs: a client that
  sends more than ``CLOSING_READ_LIMIT`` bytes after it is reset at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State

from gateway import close_codes
from gateway.link import offer_link
from gateway.server.keepalive import Keepalive, keepalive_for
from gateway.server.slots import Flag, Inbox
from gateway.telemetry import metrics

# websockets logs "connection open" and "connection rejected" per socket at INFO: keep them
# out of the server log unless asked for.
_PROTOCOL_LOG = logging.getLogger("gateway.protocol")
_INBOUND_LOG = logging.getLogger("gateway.inbound")


# Closes websockets (or this module) decides on a client frame, with their table entry.
_PROTOCOL_CLOSES = {
    r.close_code: r
    for r in (close_codes.PROTOCOL_ERROR, close_codes.MESSAGE_TOO_BIG, close_codes.INVALID_UTF8)
}

# How long a closing socket may take to finish (the peer echoing a close frame, or reading what
# is still buffered for it) before it is reset: a peer that does not read would hold it for good.
CLOSE_TIMEOUT = 3.0
# What a socket reads after its close frame went out: the peer's close frame (131 bytes at most)
# and a few frames it sent before it saw ours.
CLOSING_READ_LIMIT = 4096
# Client input is parsed this much at a time, the message budget charged between slices.
_SLICE = 4096


def _text_header(length: int) -> bytes:
    """A final, unmasked text frame's header (RFC 6455 5.2): what websockets would write, built
    here because its per-frame objects were a tenth of the fan-out's time."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.conn.logger = _PROTOCOL_LOG
        self.last_activity = self.loop.time()
        self.on_writable: Callable[[], None] | None = None
        self.on_control: Callable[[int], bool] | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self.handshake_initiated and hasattr(self, "scope"):
            offer_link(self.scope, self)

    # The Link the app writes through (gateway.connection.Link).

    def can_write(self) -> bool:
        return self.writable.is_set() and self.handshake_complete and not self.is_closing()

    def is_closing(self) -> bool:
        """No data frame may go out any more. uvicorn sets writable and handshake_complete when
        the connection is lost, and leaves close_sent unset when the client closed first."""
        return self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN

    def write_frames(self, payloads: list[bytes]) -> None:
        """Text frames of UTF-8 ``payloads``, in one write. Call only when ``can_write()``."""
        conn = self.conn
        if conn.extensions:
            # Compression, when enabled: websockets frames and compresses.
            for payload in payloads:
                conn.send_text(payload)
            self.transport.write(b"".join(conn.data_to_send()))
        elif len(payloads) == 1:
            payload = payloads[0]
            self.transport.write(_text_header(len(payload)) + payload)
        else:
            parts = []
            for payload in payloads:
                parts.append(_text_header(len(payload)))
                parts.append(payload)
            self.transport.write(b"".join(parts))

    def resume_writing(self) -> None:
        super().resume_writing()
        held = self._held_pong
        if held:
            self._held_pong = b""
            if not self.close_sent:
                self.transport.write(held)
        if self.on_writable is not None:
            self.on_writable()

    # Pings and pongs: websockets queues a pong for every ping as it parses them, and uvicorn
    # wrote them all out at once, into a transport that buffers without limit. A client that
    # pings and never reads grew its worker by tens of MiB a second.

    # Class defaults, so that a socket that never pings carries none of them.
    _control_frames = 0  # frames of the slice being parsed that the app will not count
    _held_pong = b""  # the answer to the latest ping while the client does not read
    _over_budget = False  # reading stopped for good: the connection is ending with 1008
    _read_after_close = 0  # bytes read since the close frame went out

    def handle_ping(self) -> None:
        self._control_frames += 1  # answered, or not, once the slice is parsed

    def handle_pong(self, event: Any) -> None:
        self._control_frames += 1
        super().handle_pong(event)

    # A message's frames but its last, which reaches the app as the message and is counted there.
    # Without this, a text frame without FIN and empty continuations for ever escaped the budget.

    def handle_text(self, event: Frame) -> None:
        self._control_frames += not event.fin
        super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        self._control_frames += not event.fin
        super().handle_bytes(event)

    def handle_cont(self, event: Frame) -> None:
        self._control_frames += not event.fin
        super().handle_cont(event)

    def _answer_pings(self) -> None:
        """Charge a slice's uncounted frames to the client's message budget, then send the pongs:
        all of them while the client reads, else only the latest, once it does (RFC 6455 5.5.3)."""
        count, self._control_frames = self._control_frames, 0
        pongs = self.conn.data_to_send()
        on_control = self.on_control
        if on_control is not None and not on_control(count):
            # Over budget: the connection is ending with 1008. Read none of the flood meanwhile
            # (nor let a receive resume reading); the close's deadline resets the socket.
            self._over_budget = True
            self.read_paused = False
            self.transport.pause_reading()
            return
        if not pongs or not self.handshake_complete or self.close_sent:
            return  # no frame may precede the handshake's response or follow a close
        if self.writable.is_set():
            self.transport.write(b"".join(pongs))
        else:
            self._held_pong = pongs[-1]

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close":
            if self.close_sent:
                return  # uvicorn closed it first (a ping timeout, a protocol error)
            # Flow control would hold the close frame behind a client that stopped reading
            # (the 4008 case); queue it anyway, after what is already buffered.
            self.writable.set()
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake's request and response are not needed past this point; websockets'
            # parser keeps the request alive for the connection's life, so empty its headers.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True
        elif message["type"] == "websocket.close" and self.close_timer is not None:
            # uvicorn's timer closes the transport gracefully, which never completes while the
            # peer does not read: reset it instead.
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._abort)

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        # The app is done with the socket. A done callback rather than a run_asgi override: a
        # wrapping coroutine would be one more frame held by every open socket.
        super().on_task_complete(task)
        self._abort_later()

    # Keepalive: one wheel per worker sends the pings (gateway.server.keepalive) in place of
    # uvicorn's two timers per socket; uvicorn's handle_pong still matches the payload.

    _keepalive: Keepalive | None = None
    _keepalive_slot = 0

    def start_keepalive(self) -> None:
        if self.ping_interval:
            timeout = self.ping_timeout if self.ping_timeout is not None else self.ping_interval
            wheel = keepalive_for(self.loop, self.ping_interval, timeout)
            self._keepalive = wheel
            self._keepalive_slot = wheel.schedule(self, self.loop.time() + self.ping_interval)

    def stop_keepalive(self) -> None:
        wheel = self._keepalive
        if wheel is not None:
            self._keepalive = None
            wheel.discard(self, self._keepalive_slot)
        self.pending_ping_payload = None

    def keepalive_due(self, now: float, ping: bytes, payload: bytes) -> None:
        wheel = self._keepalive
        if wheel is None:
            return
        if self.close_sent or self.transport.is_closing():
            self._keepalive = None
            return
        if self.pending_ping_payload is not None:
            due = self.ping_sent_at + wheel.timeout
            if now >= due:
                self._keepalive = None
                self.keepalive_timeout()
                return
        else:
            due = self.ping_sent_at + wheel.interval  # the first: ping_sent_at is 0
            if now >= due:
                self.transport.write(ping)
                self.pending_ping_payload = payload
                self.ping_sent_at = now
                # Back when the pong is late, or (if sooner) when the next ping is due.
                due = now + min(wheel.interval, wheel.timeout)
        self._keepalive_slot = wheel.schedule(self, due)

    def keepalive_timeout(self) -> None:
        giving_up = not (self.close_sent or self.transport.is_closing())
        if giving_up:
            # uvicorn's close reads "keepalive ping timeout": send the table's label instead, and
            # let uvicorn's own timeout (which returns early once close_sent is set) reset its timers.
            self._close_now(close_codes.PING_TIMEOUT, fail=True)
        super().keepalive_timeout()
        if giving_up:
            # uvicorn closes the transport and tells the app nothing: the user's place would be
            # held until the idle timeout, and for good while the transport cannot flush.
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1011})
            self._abort_later()

    def shutdown(self) -> None:
        """What is still open when uvicorn shuts down (the drain skipped or outrun) closes with the
        table's 1001 going_away, not uvicorn's bare 1012; the app hears of it as uvicorn's does."""
        if self.handshake_complete and not self.close_sent and self.conn.state is State.OPEN:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1001})
            self._close_now(close_codes.GOING_AWAY, fail=False)
        super().shutdown()

    def _close_now(self, refusal: close_codes.Refusal, fail: bool) -> None:
        """Close with ``refusal``'s code and label, counted, as uvicorn would have: failing the
        connection (a dead peer) or a plain close frame; then the transport closes."""
        assert refusal.close_code is not None
        metrics.REJECTIONS.labels(refusal.reason).inc()
        if fail:
            self.conn.fail(refusal.close_code, refusal.reason)
        else:
            self.conn.send_close(refusal.close_code, refusal.reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    def _abort_later(self) -> None:
        """A closing transport flushes its buffer first, which a peer that does not read never
        lets it do: reset it if it is still there after ``CLOSE_TIMEOUT``."""
        if self.close_timer is None and not self.disconnected and self.transport.is_closing():
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self.close_timer = None
        self.transport.abort()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError:
                # Upstream logs a traceback at ERROR for this client mistake; one line will do.
                self.frames = []
                _INBOUND_LOG.info("closed a connection that sent invalid UTF-8 (1007)")
                self.conn.send_close(1007, close_codes.INVALID_UTF8.reason)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        """A client frame broke a rule: websockets closed with its own wording ("frame with N
        bytes exceeds limit..."); the close carries the table's reason label instead."""
        sent = self.conn.close_sent
        refusal = _PROTOCOL_CLOSES.get(sent.code) if sent is not None else None
        if refusal is not None and sent is not None and not self.close_sent:
            metrics.REJECTIONS.labels(refusal.reason).inc()
            if sent.reason != refusal.reason:
                self.conn.data_to_send()  # websockets' close frame (and pongs before it): replaced
                close = Close(sent.code, refusal.reason).serialize()
                self.transport.write(Frame(Opcode.CLOSE, close).serialize(mask=False))
        super().handle_parser_exception()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.close_sent and self.handshake_initiated:
            self._read_after_close += len(data)
            if self._read_after_close > CLOSING_READ_LIMIT:
                # Not a close handshake any more: frames nobody will read. Cut it off.
                if self.close_timer is not None:
                    self.close_timer.cancel()
                self._abort()
                return
        if len(data) <= _SLICE:
            self._receive(data)
        else:
            view = memoryview(data)
            for start in range(0, len(data), _SLICE):
                self._receive(view[start : start + _SLICE])
                if self._over_budget or self.transport.is_closing():
                    break
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # The request never parsed, so no ASGI task exists to answer it: send the parser's
            # answer (414, 431 or nothing) and hang up.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()

    def _receive(self, data: bytes | memoryview) -> None:
        super().data_received(data)  # type: ignore[arg-type]  # websockets takes any buffer
        if self._control_frames:
            self._answer_pings()
