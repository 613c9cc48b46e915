"""A WebSocket client that sends whatever bytes it is given: for fuzzing the server's parsers.

The handshake is websockets' (so it is a valid one unless the caller writes its own request);
after it, ``send`` writes raw bytes, and ``outcome`` reads the server's frames to say how the
connection ended up: still answering, closed with a code, dropped, or silent.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

PING = b'{"type":"ping"}'
PONG = b'{"type":"pong"}'
OPEN = "open"  # answered a ping with a pong
DROPPED = "dropped"  # the TCP connection ended without a close frame
SILENT = "silent"  # neither a pong nor a close within the timeout


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = b"abcd"
) -> bytes:
    """One frame as a client might write it, any opcode or bits, minimal length encoding."""
    head = bytes(((0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF),))
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head += bytes((mask_bit | length,))
    elif length < 1 << 16:
        head += bytes((mask_bit | 126,)) + length.to_bytes(2, "big")
    else:
        head += bytes((mask_bit | 127,)) + length.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass
class Handshake:
    status: int
    headers: dict[str, str]


class RawWebSocket:
    """A real handshake on a blocking socket, then raw bytes."""

    def __init__(
        self,
        url: str,
        subprotocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri, subprotocols=subprotocols)  # type: ignore[arg-type]
        self.sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
        request = self.protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        self._pending: list[object] = []
        self.handshake = self._read_response()

    def _read_response(self) -> Handshake:
        while True:
            events = self._read_some()
            for index, event in enumerate(events):
                if isinstance(event, Response):
                    self._pending = events[index + 1 :]
                    return Handshake(event.status_code, {k.lower(): v for k, v in event.headers.raw_items()})
            if self.protocol.state.name == "CLOSED":
                return Handshake(0, {})

    def _read_some(self) -> list[object]:
        if self._pending:
            events, self._pending = self._pending, []
            return events
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    def send(self, data: bytes) -> bool:
        """Write ``data``; False when the server has already hung up."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def outcome(self, until: bytes = PONG, probe: bool = True) -> int | str:
        """Send a ping message (unless ``probe`` is off) and read: OPEN on a text frame holding
        ``until`` (the pong), the code of a close frame, DROPPED, or SILENT when the socket's
        timeout passes first."""
        if probe:
            self.send(client_frame(Opcode.TEXT.value, PING))
        try:
            while True:
                for event in self._read_some():
                    if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        close = Close.parse(event.data)
                        return close.code
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT and until in event.data:
                        return OPEN
                if self.protocol.state.name == "CLOSED":
                    return DROPPED
        except TimeoutError:
            return SILENT
        except Exception as exc:  # the server's bytes broke websockets' parser: say which
            raise AssertionError(f"unparsable answer from the server: {exc!r}") from exc

    def close(self) -> None:
        self.sock.close()
