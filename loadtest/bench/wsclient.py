"""A lean WebSocket client protocol for the benchmark: handshake, frame parsing, pongs.

The clients run on the same cores as the servers, so every microsecond they spend is one the
server under test does not get. This client does only what the benchmark needs: one upgrade
request, unfragmented server frames, masked pongs and text frames. Each target's dialect
(Socket.IO's Engine.IO packets, or plain frames) is a small ``Dialect`` on top.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import cast

OnText = Callable[[bytes], None]

_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return key + masked.to_bytes(length, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + _mask(payload)


class Dialect:
    """Plain WebSocket: the connection is open at the 101 and every text frame is a message."""

    def on_open(self, conn: WsClient) -> bool:
        """Called after the 101; True when the connection is ready."""
        return True

    def on_text(self, conn: WsClient, data: bytes) -> bytes | None:
        """Return the application message carried by a text frame, or None for protocol traffic."""
        return data


class SocketIODialect(Dialect):
    """Engine.IO 4 over WebSocket: ``0{..}`` open, ``40`` connect with auth, ``2``/``3`` pings, ``42[..]``."""

    def __init__(self, auth: bytes) -> None:
        self._auth = auth

    def on_open(self, conn: WsClient) -> bool:
        return False

    def on_text(self, conn: WsClient, data: bytes) -> bytes | None:
        if data.startswith(b"42"):
            return data
        if data == b"2":
            conn.send_text(b"3")
        elif data.startswith(b"0{"):
            conn.send_text(b"40" + self._auth)
        elif data.startswith(b"40"):
            conn.set_ready()
        elif data.startswith(b"44"):
            conn.fail(f"socket.io refused: {data[:80]!r}")
        return None


class WsClient(asyncio.Protocol):
    """One client socket. ``ready`` resolves when it is open (or fails); ``closed`` when it is gone."""

    def __init__(self, host: str, port: int, path: str, dialect: Dialect, on_message: OnText) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self.close_code: int | None = None
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._dialect = dialect
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail("connection lost before it was ready")

    @property
    def is_open(self) -> bool:
        ready = self.ready
        return not self.closed and ready.done() and not ready.cancelled() and ready.exception() is None

    def set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def send_text(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(client_frame(_TEXT, data))

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(client_frame(_CLOSE, struct.pack("!H", 1000)))
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.fail(f"handshake refused: {status.decode(errors='replace')}")
                return
            self._upgraded = True
            if self._dialect.on_open(self):
                self.set_ready()
        self._frames()

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            length = buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length = int.from_bytes(buffer[2:4], "big")
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length = int.from_bytes(buffer[2:10], "big")
                start = 10
            end = start + length
            if len(buffer) < end:
                return
            payload = bytes(buffer[start:end])
            del buffer[:end]
            if opcode == _TEXT:
                message = self._dialect.on_text(self, payload)
                if message is not None:
                    self._on_message(message)
            elif opcode == _PING and self._transport is not None:
                self._transport.write(client_frame(_PONG, payload))
            elif opcode == _CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.fail(f"closed by the server with {self.close_code}")
                self.close()
                return
