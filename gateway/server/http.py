"""uvicorn's HTTP protocol with a deadline on each request's headers.

uvicorn waits for a request's headers for ever: a client that opens a socket and sends half a
request holds it (slowloris). ``GatewayHttpProtocol`` closes it after ``handshake_timeout``, for
every request of a keep-alive connection: uvicorn's keep-alive timer stops at any byte received,
so a second request dribbled after a first one, a lone CRLF (which begins no request) or a byte
of a body the app did not read would otherwise hold the socket. The deadline runs from the
connect, then from each response, until the next request's headers are complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GatewayHttpProtocol(HttpToolsProtocol):
    """httptools' HTTP protocol with a deadline on each request's headers."""

    handshake_timeout = 10.0

    @classmethod
    def with_timeout(cls, seconds: float) -> type[GatewayHttpProtocol]:
        return type("GatewayHttpProtocol", (cls,), {"handshake_timeout": seconds})

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._headers_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.handshake_timeout, self._headers_too_slow
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_deadline is None:  # a later request: the first is timed from the connect
            self._headers_deadline = self.loop.call_later(self.handshake_timeout, self._headers_too_slow)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and self._headers_deadline is None and not self.transport.is_closing():
            # Only the next request's headers may come now (a pipelined one already has them).
            self._headers_deadline = self.loop.call_later(self.handshake_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        deadline = getattr(self, "_headers_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
