"""uvicorn's HTTP protocol (httptools), bounded: a deadline on each request's head, a limit on its
size, on how many requests one connection may have pipelined, and on descriptors.

- uvicorn waits for a request's headers for ever: a client that opens a socket and sends half a
  request holds it (slowloris). ``GatewayHttpProtocol`` closes it after ``handshake_timeout``,
  for every request of a keep-alive connection: uvicorn's keep-alive timer stops at any byte
  received, so a second request dribbled after a first one, a lone CRLF (which begins no request)
  or a byte of a body the app did not read would otherwise hold the socket. The deadline runs
  from the connect, then from each response, until the next request's headers are complete.
- httptools (llhttp) has no size limit at all, and both it and uvicorn grow what they have of a
  URL or header by concatenation, so a long one costs its square in copies. The head is fed to
  the parser in slices and counted: past a limit of ``gateway.http_refusals`` the request is
  answered 414 or 431, and what the client sends after that is not parsed. A chunked body's
  trailer section is a head too, parsed the same way after the answer may have gone: past the
  head's limit the connection is closed.
- uvicorn queues every pipelined request it parses, and a read holds thousands of tiny ones. Past
  ``MAX_PIPELINED`` the last one queued closes the connection after its answer.
- At the soft descriptor limit, libuv accepts a connection and drops it at once, unanswered and
  unlogged. Near it (``DESCRIPTOR_RESERVE``) a request is answered 503 and logged instead.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import http_refusals
from gateway.http_refusals import HttpRefusal
from gateway.telemetry.throttled_log import ThrottledLog

# Small enough that a head's size is known to within a slice, large enough that a body costs
# few parser calls.
_SLICE = 4096
# After a refusal, how long what the client still sends is read and dropped, so that the answer
# is not lost to the reset a close with unread data would send.
_LINGER = 2.0
_LOG = logging.getLogger("gateway.http")
_THROTTLED = ThrottledLog(_LOG)
_TRAILERS = http_refusals.TRAILERS_TOO_LARGE


class _Refused(Exception):
    """Raised in a parser callback: the request gets ``refusal``, and nothing after it is parsed."""

    def __init__(self, refusal: HttpRefusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


class GatewayHttpProtocol(HttpToolsProtocol):
    """httptools' HTTP protocol with a deadline on each request's head and bounds on its size."""

    handshake_timeout = 10.0

    # Per connection; class defaults until the first request begins.
    _head_open = False  # a request's head has begun and is not complete
    _trailers_open = False  # a chunk's header was parsed and no data followed: maybe trailers
    _head_bytes = 0  # of the open head (or trailer section), counted by slice
    _target_bytes = 0
    _headers = 0
    _discarding = False  # refused: what the client sends now is dropped unparsed
    _linger: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[GatewayHttpProtocol]:
        return type("GatewayHttpProtocol", (cls,), {"handshake_timeout": seconds})

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._headers_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.handshake_timeout, self._headers_too_slow
        )
        self._no_descriptors = _near_descriptor_limit(transport)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received (0.54), with the input fed in slices so that an open head is
        # counted as it grows, and the parser's verdicts answered as the table says.
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        view = memoryview(data) if len(data) > _SLICE else data
        for start in range(0, len(view), _SLICE):
            piece = view[start : start + _SLICE] if view is not data else data
            if self._head_open or self._trailers_open:
                self._head_bytes += len(piece)
                if self._head_bytes > http_refusals.MAX_HEAD_BYTES:
                    self._refuse(http_refusals.HEAD_TOO_LARGE if self._head_open else _TRAILERS)
                    return
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserCallbackError as exc:
                if isinstance(exc.__context__, _Refused):
                    self._refuse(exc.__context__.refusal)
                else:
                    self._invalid()
                return
            except httptools.HttpParserError:
                self._invalid()
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            if self._discarding:
                return

    # Parser callbacks: count what the head has taken.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_bytes = self._target_bytes = self._headers = 0
        if self._headers_deadline is None:  # a later request: the first is timed from the connect
            self._headers_deadline = self.loop.call_later(self.handshake_timeout, self._headers_too_slow)

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        if self._target_bytes > http_refusals.MAX_TARGET_BYTES:
            raise _Refused(http_refusals.TARGET_TOO_LONG)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > http_refusals.MAX_HEADERS:
            raise _Refused(http_refusals.TOO_MANY_HEADERS)
        if len(name) + len(value) > http_refusals.MAX_HEADER_BYTES:
            raise _Refused(http_refusals.HEADER_TOO_LARGE)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        self._head_open = False
        if self._no_descriptors:
            raise _Refused(http_refusals.NO_DESCRIPTORS)
        if self.parser.should_upgrade() and self._should_upgrade() and not self._upgrade_allowed():
            raise _Refused(http_refusals.BAD_UPGRADE)
        if self.cycle is not None and not self.cycle.response_complete:
            if len(self.pipeline) >= http_refusals.MAX_PIPELINED:
                # The last request queued is the last answered; this one and the rest are not read.
                self.pipeline[0][0].keep_alive = False
                self._discarding = True
                raise _Refused(http_refusals.PIPELINE_TOO_DEEP)
        super().on_headers_complete()

    # A chunked body: the last chunk (size 0) is followed by a trailer section, which ends with
    # on_chunk_complete; any other chunk by its data. Only the first can grow unseen.

    def on_chunk_header(self) -> None:
        self._trailers_open = True
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._trailers_open = False
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._trailers_open = False

    def _upgrade_allowed(self) -> bool:
        """RFC 6455 4.1: an opening handshake is HTTP/1.1 or later, with a Host header."""
        return self.parser.get_http_version() == "1.1" and any(name == b"host" for name, _ in self.headers)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and self._headers_deadline is None and not self.transport.is_closing():
            # Only the next request's headers may come now (a pipelined one already has them).
            self._headers_deadline = self.loop.call_later(self.handshake_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    # Refusals

    def _refuse(self, refusal: HttpRefusal) -> None:
        """Answer ``refusal`` (nothing, when the queued answers end the connection) and read
        nothing more. A head refused before its end is still coming: close once the client has
        had time to read the answer (a close with unread input sends a reset, which can destroy
        the answer on its way); else at once, which frees the descriptor."""
        self._discarding = True
        self._cancel_deadline()
        # Imported here: the master imports this module (through the worker class) before
        # prometheus_client's multiprocess directory is set.
        from gateway.telemetry import metrics

        metrics.HTTP_REFUSALS.labels(refusal.reason).inc()
        if refusal is _TRAILERS:
            _THROTTLED.info("closed a connection: %s", refusal.reason)
            self.transport.close()  # the answer is the app's, and may be out already
            return
        if refusal.status is None:
            return
        if refusal is http_refusals.NO_DESCRIPTORS:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            _THROTTLED.warning(
                "a worker is within %d descriptors of its soft limit (%d): new requests get 503",
                http_refusals.DESCRIPTOR_RESERVE,
                soft,
            )
        else:
            _THROTTLED.info("refused a request: %d %s", refusal.status, refusal.reason)
        body = refusal.reason.encode() + b"\n"
        self.transport.write(
            b"".join(
                (
                    b"HTTP/1.1 %d %s\r\n" % (refusal.status, http.HTTPStatus(refusal.status).phrase.encode()),
                    b"content-type: text/plain; charset=utf-8\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                )
            )
        )
        if not self._head_open:
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(_LINGER, self.transport.close)

    def _invalid(self) -> None:
        # As uvicorn answers a request its parser rejects.
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _cancel_deadline(self) -> None:
        deadline = getattr(self, "_headers_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def _near_descriptor_limit(transport: Any) -> bool:
    """Whether the worker is within DESCRIPTOR_RESERVE descriptors of its soft limit. A new
    descriptor is always the lowest free one (POSIX), so the socket's own number is how many
    the process has open below it: no need to count them."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft != resource.RLIM_INFINITY and sock.fileno() >= soft - http_refusals.DESCRIPTOR_RESERVE
